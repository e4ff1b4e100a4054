//! ferray example: batch inference with ferray data. `pipeline.toml` reads the wine-quality
//! data (`../train-wine/data`), scores every wine with a logistic regression on an actor pool
//! of one to two actors (each holds its model: made once, then given batch after batch) and
//! writes the rows with their scores as Parquet:
//!
//! ```text
//! ferray data run guest-examples/data-inference/pipeline.toml
//! ```

use std::cell::Cell;
use std::sync::Arc;

use exports::ferray_examples::data_inference::model::{Guest, GuestClassifier};
use ferray_sdk::data::arrow_array::{Array, BooleanArray, Float64Array, Int64Array, RecordBatch};
use ferray_sdk::data::arrow_schema::DataType;
use ferray_sdk::data::{self, with_column};

wit_bindgen::generate!({ path: "wit", world: "data-inference" });

struct Component;

impl Guest for Component {
    type Classifier = Classifier;
}

struct Classifier {
    weights: Vec<f64>,
    bias: f64,
    rows: Cell<u64>,
}

/// A numeric column as f64 values (null where it is null).
fn numeric(c: &dyn Array) -> Option<Vec<Option<f64>>> {
    match c.data_type() {
        DataType::Float64 => {
            let a = c.as_any().downcast_ref::<Float64Array>()?;
            Some(a.iter().collect())
        }
        DataType::Int64 => {
            let a = c.as_any().downcast_ref::<Int64Array>()?;
            Some(a.iter().map(|v| v.map(|v| v as f64)).collect())
        }
        _ => None,
    }
}

impl Classifier {
    fn score(&self, b: &RecordBatch) -> Result<RecordBatch, String> {
        let features: Vec<Vec<Option<f64>>> = b
            .columns()
            .iter()
            .filter_map(|c| numeric(c.as_ref()))
            .take(self.weights.len())
            .collect();
        if features.len() < self.weights.len() {
            return Err(format!(
                "the model has {} weights and the batch {} numeric columns",
                self.weights.len(),
                features.len()
            ));
        }
        let scores: Float64Array = (0..b.num_rows())
            .map(|row| {
                let mut s = self.bias;
                for (w, col) in self.weights.iter().zip(&features) {
                    s += w * col[row]?;
                }
                Some(1.0 / (1.0 + (-s).exp()))
            })
            .collect();
        let positive: BooleanArray = scores.iter().map(|s| s.map(|s| s > 0.5)).collect();
        self.rows.set(self.rows.get() + b.num_rows() as u64);
        let b = with_column(b, "score", Arc::new(scores))?;
        with_column(&b, "positive", Arc::new(positive))
    }
}

impl GuestClassifier for Classifier {
    fn new(weights: Vec<f64>, bias: f64) -> Self {
        Classifier {
            weights,
            bias,
            rows: Cell::new(0),
        }
    }

    fn predict(&self, batch: Vec<u8>) -> Result<Vec<u8>, String> {
        data::map(&batch, |b| self.score(&b))
    }

    fn rows_scored(&self) -> u64 {
        self.rows.get()
    }
}

export!(Component);
