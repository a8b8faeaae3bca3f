//! Rows as `COPY … FROM STDIN` takes them, in its text format: the way a
//! batch of keys all new reaches its table. PostgreSQL loads COPY rows in
//! bulk (many rows per page write and per WAL record) and parses each
//! value once with its type's input function, where `INSERT … SELECT FROM
//! unnest(…)` plans, casts and logs row by row: about a third less
//! PostgreSQL time per row on a first import.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::SinkExt;
use sluice_stage::StageError;
use tokio_postgres::{error::SqlState, CopyInSink};

/// How a COPY that failed left its connection.
pub(crate) enum CopyFailed {
    /// A key held already: nothing written, the connection in step, and
    /// the batch goes the way of keys that may be held.
    Held,
    /// The error, the connection in step: raised while rows were read (a
    /// data or constraint error), after PostgreSQL took the COPY's first
    /// `Sync`.
    Rows(tokio_postgres::Error),
    /// Refused before its data was read (no permission, a view, row-level
    /// security, a lock or statement time-out, a read-only database): the
    /// server answers the COPY's two `Sync`s once each, and tokio-postgres
    /// expects one answer, so the next statement would read this one's.
    /// The connection must go; see [`CopyRefusals`].
    OutOfStep(tokio_postgres::Error),
    /// The connection failed.
    Lost(tokio_postgres::Error),
}

impl CopyFailed {
    pub(crate) fn of(e: tokio_postgres::Error) -> CopyFailed {
        let Some(code) = e.code() else {
            return CopyFailed::Lost(e);
        };
        if *code == SqlState::UNIQUE_VIOLATION {
            return CopyFailed::Held;
        }
        match code.code().get(..2) {
            Some("22" | "23") => CopyFailed::Rows(e),
            _ => CopyFailed::OutOfStep(e),
        }
    }
}

/// When COPY was last refused before its data, shared by a saver's
/// writers: for a while after, batches go through `INSERT`, so a table
/// COPY cannot write (a view, row-level security) does not cost a new
/// connection per batch.
#[derive(Debug, Clone, Default)]
pub(crate) struct CopyRefusals {
    last: Arc<Mutex<Option<Instant>>>,
}

impl CopyRefusals {
    /// How long COPY rests after a refusal.
    const REST: Duration = Duration::from_secs(300);

    pub(crate) fn resting(&self) -> bool {
        let last = self.last.lock().expect("never poisoned");
        last.is_some_and(|at| at.elapsed() < Self::REST)
    }

    /// Records `e`, a refusal before the data, and returns the error that
    /// ends the batch: never a data error, which would keep the writer
    /// (and its connection, out of step) for one message at a time.
    pub(crate) fn refused(&self, action: &str, e: &tokio_postgres::Error) -> StageError {
        *self.last.lock().expect("never poisoned") = Some(Instant::now());
        let error = crate::db_error(action, e);
        tracing::warn!(%error, "COPY refused before its data: a new connection, and INSERT for 5 minutes");
        match error.is_outage() {
            true => error,
            false => StageError::transient(format!(
                "{error} (a COPY refused before its data: the connection is replaced)"
            )),
        }
    }
}

/// COPY's text format, row by row: fields split by tabs, rows ended by a
/// newline, `\N` for NULL, and a backslash before any backslash, tab,
/// newline or carriage return in a value (so no value can end a field, a
/// row or the data).
pub(crate) struct CopyText {
    buf: BytesMut,
    in_row: bool,
}

impl CopyText {
    pub(crate) fn with_capacity(bytes: usize) -> Self {
        CopyText {
            buf: BytesMut::with_capacity(bytes),
            in_row: false,
        }
    }

    fn next_field(&mut self) {
        if self.in_row {
            self.buf.put_u8(b'\t');
        }
        self.in_row = true;
    }

    pub(crate) fn int(&mut self, value: i64) {
        self.next_field();
        // Digits from the right, without allocating (20 bytes hold i64::MIN).
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut n = value.unsigned_abs();
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        if value < 0 {
            at -= 1;
            digits[at] = b'-';
        }
        self.buf.put_slice(&digits[at..]);
    }

    pub(crate) fn text(&mut self, value: Option<&str>) {
        self.next_field();
        let Some(value) = value else {
            self.buf.put_slice(b"\\N");
            return;
        };
        let bytes = value.as_bytes();
        if !bytes
            .iter()
            .any(|b| matches!(b, b'\\' | b'\t' | b'\n' | b'\r'))
        {
            self.buf.put_slice(bytes);
            return;
        }
        for &b in bytes {
            match b {
                b'\\' => self.buf.put_slice(b"\\\\"),
                b'\t' => self.buf.put_slice(b"\\t"),
                b'\n' => self.buf.put_slice(b"\\n"),
                b'\r' => self.buf.put_slice(b"\\r"),
                b => self.buf.put_u8(b),
            }
        }
    }

    pub(crate) fn end_row(&mut self) {
        self.buf.put_u8(b'\n');
        self.in_row = false;
    }

    pub(crate) fn into_bytes(self) -> Bytes {
        self.buf.freeze()
    }
}

/// Sends `data` into a started `COPY … FROM STDIN` and ends it: the rows
/// copied. Statements sent on the connection after this is first polled
/// go after the data (a connection sends requests in turn), so a caller
/// can pipeline what follows the copy with it.
pub(crate) async fn send(
    sink: CopyInSink<Bytes>,
    data: Bytes,
) -> Result<u64, tokio_postgres::Error> {
    let mut sink = std::pin::pin!(sink);
    if !data.is_empty() {
        sink.send(data).await?;
    }
    sink.as_mut().finish().await
}

#[cfg(test)]
mod tests {
    use super::CopyText;

    #[test]
    fn values_never_break_out_of_their_field() {
        let mut rows = CopyText::with_capacity(64);
        rows.int(-9_223_372_036_854_775_808);
        rows.int(0);
        rows.text(Some("a\tb\\c\nd\re"));
        rows.text(None);
        rows.text(Some("\\N"));
        rows.end_row();
        rows.text(Some("\\."));
        rows.int(42);
        rows.end_row();
        assert_eq!(
            &rows.into_bytes()[..],
            b"-9223372036854775808\t0\ta\\tb\\\\c\\nd\\re\t\\N\t\\\\N\n\\\\.\t42\n"
        );
    }
}
