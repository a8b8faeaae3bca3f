//! Windows of rows against a plain statement of the rule: every row in
//! exactly one window, in order; window `w` holds rows `1 + w·N` to
//! `(w+1)·N`; ids consecutive from 0, none empty of rows; the valid rows
//! come out as they went in.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_messages::{
    windows::{window_position, Windows},
    Transaction,
};

fuzz_target!(|input: (u8, Vec<u8>)| {
    let (size, rows) = input;
    let n = u64::from(size.max(1));
    // Each byte a row: 0 a malformed one, any other a valid one.
    let mut windows: Windows<Transaction> = Windows::new(n);
    let mut out = Vec::new();
    for (i, &byte) in rows.iter().enumerate() {
        out.extend(windows.next_row());
        if byte != 0 {
            windows.push(Transaction {
                id: i as i64,
                amount: "1".parse().unwrap(),
                line: Some(i as u64 + 2),
            });
        }
    }
    out.extend(windows.finish());
    assert!(windows.finish().is_none());

    let count = rows.len() as u64;
    assert_eq!(out.len() as u64, count.div_ceil(n), "{n} {count}");
    let mut valid = Vec::new();
    for (w, window) in out.iter().enumerate() {
        assert_eq!(window.index, w as u64);
        let (first, last) = (1 + window.index * n, (window.index + 1) * n);
        assert_eq!(window_position(window.index, n), format!("rows-{first}-{last}"));
        for t in &window.rows {
            // Row i (0-based) is row i + 1 of the file's rows.
            let row = t.id as u64 + 1;
            assert!((first..=last).contains(&row), "row {row} in {first}-{last}");
        }
        valid.extend(window.rows.iter().map(|t| t.id));
    }
    let expected: Vec<i64> = (0..rows.len() as i64).filter(|&i| rows[i as usize] != 0).collect();
    assert_eq!(valid, expected);
});
