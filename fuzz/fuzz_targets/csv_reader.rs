//! The CSV reader on arbitrary bytes, split into arbitrary chunks: it never
//! panics, line numbers only grow and start after the header, and a quoted
//! record longer than the row limit is refused rather than buffered; and
//! telling quoted fields apart (for NULL markers) changes no row.
#![no_main]

use bytes::Bytes;
use futures_util::stream;
use libfuzzer_sys::fuzz_target;
use sluice_download::{Columns, CsvFile, CsvFormat, Row, Url};

fuzz_target!(|input: &[u8]| {
    let Some((&chunk, data)) = input.split_first() else {
        return;
    };
    let chunk = usize::from(chunk.max(1));
    let chunks = || -> Vec<std::io::Result<Bytes>> {
        data.chunks(chunk)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let url = Url::parse("http://fuzz/t.csv").unwrap();
        let columns = ["id", "amount"];
        let Ok(mut file) =
            CsvFile::from_stream(url.clone(), stream::iter(chunks()), &columns).await
        else {
            return;
        };
        let format = CsvFormat {
            trim: true,
            quoted_fields: true,
            ..CsvFormat::default()
        };
        let mut marked = CsvFile::read(
            url,
            Box::pin(stream::iter(chunks())),
            &format,
            Columns::Named(&columns),
        )
        .await
        .expect("marking changes no header");
        let mut last = 1;
        while let Ok(Some(row)) = file.next_row().await {
            let (line, fields) = match row {
                Row::Record(record) => {
                    // Requested columns are there, trimmed.
                    assert_eq!(record.get(0), record.get(0).trim());
                    (record.line(), Ok(record.fields().join("\u{0}")))
                }
                Row::Malformed { line, reason } => (line, Err(reason)),
            };
            assert!(line > last, "line {line} after {last}");
            last = line;
            let (twin_line, twin) = match marked.next_row().await {
                Ok(Some(Row::Record(record))) => {
                    (record.line(), Ok(record.fields().join("\u{0}")))
                }
                Ok(Some(Row::Malformed { line, reason })) => (line, Err(reason)),
                other => panic!("line {line}: the marked reader gave {:?}", other.is_ok()),
            };
            assert_eq!((line, &fields), (twin_line, &twin));
        }
    });
});
