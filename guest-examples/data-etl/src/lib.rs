//! ferray example: ETL with ferray data. `pipeline.toml` reads messy sales rows from CSV
//! (`data/sales.csv`), cleans them in this component (a task per block), groups them by region
//! (count, sum, mean, min and max of the amount: a hash shuffle of ferray data's built-in
//! operators), sorts the regions and writes Parquet:
//!
//! ```text
//! ferray data run guest-examples/data-etl/pipeline.toml
//! ```

use std::sync::Arc;

use ferray_sdk::data;
use ferray_sdk::data::arrow_array::cast::AsArray;
use ferray_sdk::data::arrow_array::types::{Float64Type, Int64Type};
use ferray_sdk::data::arrow_array::{Array, Float64Array, StringArray};
use ferray_sdk::data::arrow_schema::DataType;

wit_bindgen::generate!({ path: "wit", world: "data-etl" });

struct Component;
export!(Component);

/// `$1,234.50`, ` 12 `, `-3.5` as a number; `n/a`, empty text: none.
fn amount(text: &str) -> Option<f64> {
    let digits: String = text
        .trim()
        .chars()
        .filter(|c| *c != '$' && *c != ',')
        .collect();
    digits.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// The amounts of a column read as text or as numbers.
fn amounts(c: &dyn Array) -> Result<Vec<Option<f64>>, String> {
    Ok(match c.data_type() {
        DataType::Utf8 => c
            .as_string::<i32>()
            .iter()
            .map(|v| v.and_then(amount))
            .collect(),
        DataType::Float64 => c.as_primitive::<Float64Type>().iter().collect(),
        DataType::Int64 => c
            .as_primitive::<Int64Type>()
            .iter()
            .map(|v| v.map(|v| v as f64))
            .collect(),
        other => return Err(format!("column `amount` is {other}, not text or a number")),
    })
}

impl Guest for Component {
    fn clean(batch: Vec<u8>) -> Result<Vec<u8>, String> {
        data::map(&batch, |b| {
            let region = data::column::<StringArray>(&b, "region")?;
            let amount = amounts(
                b.column_by_name("amount")
                    .ok_or("no column `amount`")?
                    .as_ref(),
            )?;
            let mut keep = Vec::new();
            let mut regions = Vec::new();
            let mut values = Vec::new();
            for (i, (r, a)) in region.iter().zip(&amount).enumerate() {
                let r = r.map(|r| r.trim().to_lowercase()).unwrap_or_default();
                if let (false, Some(a)) = (r.is_empty(), a) {
                    keep.push(i as u32);
                    regions.push(r);
                    values.push(*a);
                }
            }
            let kept = data::take(&b, &keep)?;
            let kept = data::with_column(&kept, "region", Arc::new(StringArray::from(regions)))?;
            data::with_column(&kept, "amount", Arc::new(Float64Array::from(values)))
        })
    }
}
