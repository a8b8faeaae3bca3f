//! How a file's rows are cut into transactions messages, and what each
//! message is called: part of the contract, since the tracker names every
//! id an account announced from its count and window size alone.
//!
//! Window `w` of `N` rows holds rows `1 + w·N` to `(w+1)·N`, rows counted
//! after the header, malformed ones included (they hold their place, so
//! the ids depend on the file and `N` only), empty lines not: a stretch
//! of them costs nothing. Its id ends `rows-<first>-<last>`.

use crate::Transaction;

/// Rows per window (`SLUICE_TRANSACTIONS_PER_MESSAGE`) unless set. Below
/// it every message's own cost (its publish and acknowledgement, its
/// record and the JetStream index entry) shows; above it nothing got
/// faster, while the widest row a window can carry (all of it in one
/// message, under the server's max payload) gets narrower. 1M rows end to
/// end, the median of 3 runs each, in one sitting: 2.13 s at 100, 1.89 s
/// at 250, 2.00 s at 400, 1.93 s at 500, 2.01 s at 1,000.
pub const DEFAULT_ROWS_PER_WINDOW: u32 = 250;

/// One window, ready to publish: transactions, or any spec's rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window<T = Transaction> {
    /// Its index in the file, from 0: it holds rows `1 + index·N` to `(index+1)·N`.
    pub index: u64,
    /// Its valid rows in file order (empty if all were malformed).
    pub rows: Vec<T>,
}

/// The position part of window `index`'s id, for windows of `rows` rows.
pub fn window_position(index: u64, rows: u64) -> String {
    format!("rows-{}-{}", 1 + index * rows, (index + 1) * rows)
}

/// The position part of window `index`'s id in version `version` of a
/// file: a file read again from its first row because it changed between
/// attempts names its windows apart from the earlier version's.
pub fn versioned_position(version: u32, index: u64, rows: u64) -> String {
    match version {
        0 | 1 => window_position(index, rows),
        v => format!("v{v}-{}", window_position(index, rows)),
    }
}

/// The version of a file read once (serde's default).
pub fn first_version() -> u32 {
    1
}

/// Whether `version` is the first, which ids and facts leave unsaid.
pub fn is_first_version(version: &u32) -> bool {
    *version <= 1
}

/// The file version a window's id names (`…/v<n>-rows-…`), 1 if none.
pub fn version_of(id: &str) -> u32 {
    let last = id.rsplit('/').next().unwrap_or(id);
    last.strip_prefix('v')
        .and_then(|rest| rest.split_once('-'))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or(1)
}

/// Cuts a stream of rows into windows.
#[derive(Debug)]
pub struct Windows<T = Transaction> {
    rows: u64,
    index: u64,
    read: u64,
    pending: Vec<T>,
    /// The windows before `index` were stored by an earlier attempt.
    resumed: bool,
}

impl<T> Windows<T> {
    /// Windows of `rows` rows (at least 1).
    pub fn new(rows: u64) -> Self {
        Windows {
            rows: rows.max(1),
            index: 0,
            read: 0,
            pending: Vec::new(),
            resumed: false,
        }
    }

    /// Windows of `rows` rows, going on after the first `done` rows (a
    /// multiple of `rows`), whose windows an earlier attempt stored.
    pub fn after(rows: u64, done: u64) -> Self {
        let rows = rows.max(1);
        Windows {
            index: done / rows,
            read: done,
            resumed: done > 0,
            ..Windows::new(rows)
        }
    }

    /// Rows counted so far, malformed ones included.
    pub fn rows_read(&self) -> u64 {
        self.read
    }

    /// N: the rows a window holds at most.
    pub fn rows_per_window(&self) -> u64 {
        self.rows
    }

    /// Counts the next row, valid or malformed; returns the window it does
    /// not fit in, now complete. Call before [`Windows::push`] of its row.
    pub fn next_row(&mut self) -> Option<Window<T>> {
        let boundary = self.read > 0 && self.read.is_multiple_of(self.rows);
        // The window before a resumed one was stored by an earlier attempt.
        let full = (boundary && !std::mem::take(&mut self.resumed)).then(|| self.close());
        self.read += 1;
        full
    }

    /// Adds the current row to its window.
    pub fn push(&mut self, row: T) {
        self.pending.push(row);
    }

    /// The last window, if any row was read.
    pub fn finish(&mut self) -> Option<Window<T>> {
        (self.read > 0 && self.read > self.index * self.rows).then(|| self.close())
    }

    fn close(&mut self) -> Window<T> {
        let window = Window {
            index: self.index,
            rows: std::mem::take(&mut self.pending),
        };
        self.index += 1;
        window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64) -> Transaction {
        Transaction {
            id,
            amount: "1".parse().unwrap(),
            line: Some(id as u64),
        }
    }

    #[test]
    fn resumed_windows_go_on_as_if_the_file_had_been_read_from_its_start() {
        let whole = |rows: u64| {
            let mut windows: Windows = Windows::new(3);
            let mut out = Vec::new();
            for n in 1..=rows as i64 {
                out.extend(windows.next_row());
                windows.push(row(n));
            }
            out.extend(windows.finish());
            out
        };
        // 3 windows of 3 stored; rows 10 and 11 left.
        let mut windows: Windows = Windows::after(3, 9);
        assert_eq!(windows.rows_read(), 9);
        let mut out = Vec::new();
        for n in 10..=11 {
            out.extend(windows.next_row());
            windows.push(row(n));
        }
        out.extend(windows.finish());
        assert_eq!(out, whole(11)[3..].to_vec());
        // Nothing left after the stored windows: nothing more to send.
        let mut done: Windows = Windows::after(3, 9);
        assert_eq!(done.finish(), None);
    }

    #[test]
    fn window_ids_depend_on_the_row_and_window_size_only() {
        assert_eq!(window_position(0, 100), "rows-1-100");
        assert_eq!(window_position(1, 100), "rows-101-200");
        assert_eq!(window_position(0, 1), "rows-1-1");
        assert_eq!(window_position(4, 1), "rows-5-5");
        assert_eq!(versioned_position(1, 1, 100), "rows-101-200");
        assert_eq!(versioned_position(3, 1, 100), "v3-rows-101-200");
        assert_eq!(version_of("i/7/v3-rows-101-200"), 3);
        assert_eq!(version_of("i/7/rows-101-200"), 1);
        assert_eq!(version_of("i/7/lines-2-101"), 1);
        assert_eq!(version_of("rows-1-1"), 1);
    }

    #[test]
    fn rows_fill_windows_in_order_and_malformed_ones_hold_their_place() {
        let mut windows: Windows = Windows::new(2);
        let mut out = Vec::new();
        // Rows 1 to 5: row 3 malformed.
        for n in 1..=5 {
            out.extend(windows.next_row());
            if n != 3 {
                windows.push(row(n));
            }
        }
        out.extend(windows.finish());
        assert_eq!(
            out,
            [
                Window {
                    index: 0,
                    rows: vec![row(1), row(2)]
                },
                Window {
                    index: 1,
                    rows: vec![row(4)]
                },
                Window {
                    index: 2,
                    rows: vec![row(5)]
                },
            ]
        );
        assert_eq!(Windows::<Transaction>::new(3).finish(), None);
        // Exactly full: no empty window after it.
        let mut windows: Windows = Windows::new(2);
        windows.next_row();
        windows.next_row();
        assert_eq!(windows.finish().map(|w| w.index), Some(0));
        assert_eq!(windows.finish(), None);
    }
}
