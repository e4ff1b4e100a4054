//! A block: one Arrow record batch, stored as an object whose value is a WIT
//! `list<u8>` holding the batch in the Arrow IPC stream format (schema
//! message, one record batch, end of stream).
//!
//! Because the object is a `list<u8>` value, a block's reference is passed
//! as is to a component function `func(batch: list<u8>) -> list<u8>`: the
//! bytes go from the object store to the guest without the driver touching
//! them. The encoding is deterministic (schema and field metadata are
//! dropped, since they are hash maps whose order the IPC writer does not
//! fix), so equal batches are one object and reading the same file twice
//! gives the same block ids.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{Field, Schema};
use bytes::Bytes;

use crate::DataError;

/// The canonical encoding of `list<u8>` holding `batch` as an IPC stream.
pub fn encode_batch(batch: &RecordBatch) -> Result<Bytes, DataError> {
    let batch = without_metadata(batch)?;
    let mut ipc = Vec::with_capacity(batch.get_array_memory_size() + 1024);
    {
        let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut ipc, batch.schema_ref())
            .map_err(|e| DataError::arrow("cannot encode a block", e))?;
        w.write(&batch)
            .map_err(|e| DataError::arrow("cannot encode a block", e))?;
        w.finish()
            .map_err(|e| DataError::arrow("cannot encode a block", e))?;
    }
    let mut out = Vec::with_capacity(ipc.len() + 10);
    put_varint(&mut out, ipc.len() as u64);
    out.extend_from_slice(&ipc);
    Ok(Bytes::from(out))
}

/// The canonical encoding of a `list<u8>` holding `bytes` (an argument).
pub(crate) fn bytes_value(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 10);
    put_varint(&mut out, bytes.len() as u64);
    out.extend_from_slice(bytes);
    out
}

/// The batch in a block's value (a `list<u8>` holding an IPC stream). A
/// stream of several batches (a guest may write its result so) is
/// concatenated into one; a stream of none is an empty batch of its schema.
pub fn decode_batch(value: &Bytes) -> Result<RecordBatch, DataError> {
    let ipc = list_u8(value)?;
    decode_ipc(ipc)
}

/// The batch in raw IPC stream bytes.
pub fn decode_ipc(ipc: Bytes) -> Result<RecordBatch, DataError> {
    let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None)
        .map_err(|e| DataError::arrow("not an Arrow IPC stream", e))?;
    let schema = reader.schema();
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| DataError::arrow("not an Arrow IPC stream", e))?;
    let mut batches = batches;
    match batches.len() {
        0 => Ok(RecordBatch::new_empty(schema)),
        1 => Ok(batches
            .pop()
            .unwrap_or_else(|| RecordBatch::new_empty(schema))),
        _ => arrow_select::concat::concat_batches(&schema, &batches)
            .map_err(|e| DataError::arrow("cannot join the stream's batches", e)),
    }
}

/// The bytes of a canonically encoded `list<u8>` (a LEB128 length, then
/// the bytes), without copying.
pub fn list_u8(value: &Bytes) -> Result<Bytes, DataError> {
    let (len, used) = get_varint(value)
        .ok_or_else(|| DataError::BadBlock("its length prefix is cut or too long".into()))?;
    let end = used
        .checked_add(usize::try_from(len).unwrap_or(usize::MAX))
        .filter(|end| *end == value.len())
        .ok_or_else(|| {
            DataError::BadBlock(format!(
                "it says {len} bytes and holds {}",
                value.len().saturating_sub(used)
            ))
        })?;
    Ok(value.slice(used..end))
}

/// The value of `result<list<u8>, string>`: the `ok` value's own encoding
/// as a `list<u8>` (a slice, no copy), or the guest's error text.
pub fn result_list_u8(value: &Bytes) -> Result<Result<Bytes, String>, DataError> {
    match value.first() {
        Some(0) => {
            let ok = value.slice(1..);
            list_u8(&ok)?;
            Ok(Ok(ok))
        }
        Some(1) => {
            let text = list_u8(&value.slice(1..))?;
            Ok(Err(String::from_utf8_lossy(&text).into_owned()))
        }
        _ => Err(DataError::BadBlock("not a result<list<u8>, string>".into())),
    }
}

/// `batch` with its schema's and fields' metadata dropped.
fn without_metadata(batch: &RecordBatch) -> Result<RecordBatch, DataError> {
    let schema = batch.schema();
    let plain =
        schema.metadata().is_empty() && schema.fields().iter().all(|f| f.metadata().is_empty());
    if plain {
        return Ok(batch.clone());
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            f.as_ref()
                .clone()
                .with_metadata(std::collections::HashMap::<String, String>::new())
        })
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), batch.columns().to_vec())
        .map_err(|e| DataError::arrow("cannot encode a block", e))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A LEB128 `u64` at the start of `bytes` and how many bytes it took.
fn get_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, b) in bytes.iter().take(10).enumerate() {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, StringArray};

    fn batch() -> RecordBatch {
        RecordBatch::try_from_iter([
            (
                "x",
                Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])) as _,
            ),
            ("s", Arc::new(StringArray::from(vec!["a", "b", "c"])) as _),
        ])
        .expect("batch")
    }

    #[test]
    fn a_block_round_trips_and_equal_batches_encode_equally() {
        let b = batch();
        let v = encode_batch(&b).expect("encode");
        assert_eq!(decode_batch(&v).expect("decode"), b);
        // With metadata (a parquet reader's), the bytes are the same.
        let schema = b
            .schema()
            .as_ref()
            .clone()
            .with_metadata(std::collections::HashMap::from([(
                "k".to_string(),
                "v".to_string(),
            )]));
        let meta = RecordBatch::try_new(Arc::new(schema), b.columns().to_vec()).expect("schema");
        assert_eq!(encode_batch(&meta).expect("encode"), v);
    }

    #[test]
    fn a_cut_or_garbled_block_is_a_clear_error() {
        let v = encode_batch(&batch()).expect("encode");
        let cut = v.slice(..v.len() - 1);
        assert!(matches!(decode_batch(&cut), Err(DataError::BadBlock(_))));
        let mut garbled = vec![5u8];
        garbled.extend_from_slice(b"hello");
        let e = decode_batch(&Bytes::from(garbled)).expect_err("garbage");
        assert!(e.to_string().contains("not an Arrow IPC stream"), "{e}");
    }

    #[test]
    fn a_result_value_gives_the_block_or_the_guest_s_error() {
        let v = encode_batch(&batch()).expect("encode");
        let mut ok = vec![0u8];
        ok.extend_from_slice(&v);
        let inner = result_list_u8(&Bytes::from(ok)).expect("ok").expect("ok");
        assert_eq!(inner, v);
        let mut err = vec![1u8, 4];
        err.extend_from_slice(b"oops");
        assert_eq!(
            result_list_u8(&Bytes::from(err)).expect("err"),
            Err("oops".to_string())
        );
    }
}
