//! The CSV reader on arbitrary bytes, split into arbitrary chunks: it never
//! panics, line numbers only grow and start after the header, and a quoted
//! record longer than the row limit is refused rather than buffered.
#![no_main]

use bytes::Bytes;
use futures_util::stream;
use libfuzzer_sys::fuzz_target;
use sluice_download::{CsvFile, Row, Url};

fuzz_target!(|input: &[u8]| {
    let Some((&chunk, data)) = input.split_first() else {
        return;
    };
    let chunk = usize::from(chunk.max(1));
    let chunks: Vec<std::io::Result<Bytes>> = data
        .chunks(chunk)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let url = Url::parse("http://fuzz/t.csv").unwrap();
        let Ok(mut file) =
            CsvFile::from_stream(url, stream::iter(chunks), &["id", "amount"]).await
        else {
            return;
        };
        let mut last = 1;
        while let Ok(Some(row)) = file.next_row().await {
            let line = match row {
                Row::Record(record) => {
                    // Requested columns are there, trimmed.
                    assert_eq!(record.get(0), record.get(0).trim());
                    record.line()
                }
                Row::Malformed { line, .. } => line,
            };
            assert!(line > last, "line {line} after {last}");
            last = line;
        }
    });
});
