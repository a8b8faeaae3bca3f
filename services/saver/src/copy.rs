//! Rows as `COPY … FROM STDIN` takes them, in its text format: the way a
//! batch of keys all new reaches its table. PostgreSQL loads COPY rows in
//! bulk (many rows per page write and per WAL record) and parses each
//! value once with its type's input function, where `INSERT … SELECT FROM
//! unnest(…)` plans, casts and logs row by row: about a third less
//! PostgreSQL time per row on a first import.

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::SinkExt;
use tokio_postgres::CopyInSink;

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
