//! Sample data sets: the files an import reads and the rows it must leave.

use std::fmt::Write as _;

use bytes::Bytes;

/// A row the `transactions` table must hold, amount as PostgreSQL prints it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ExpectedRow {
    pub account_id: i64,
    pub id: i64,
    pub amount: String,
}

/// Files by URL path, with the rows importing `/accounts.csv` must produce.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub files: Vec<(String, Bytes)>,
    pub expected: Vec<ExpectedRow>,
    pub accounts: usize,
}

impl Dataset {
    /// `accounts` accounts sharing `transactions` transactions, amounts of
    /// ±100,000.00 with two decimals, links relative to the accounts file.
    /// The same seed gives the same files.
    pub fn generate(accounts: usize, transactions: usize, seed: u64) -> Dataset {
        Dataset::generate_from(1_000, "", accounts, transactions, seed)
    }

    /// Like [`Dataset::generate`], with account ids from `first_account` and
    /// every file under the path `prefix` (`/b` gives `/b/accounts.csv`), so
    /// several data sets can be served and saved side by side.
    pub fn generate_from(
        first_account: i64,
        prefix: &str,
        accounts: usize,
        transactions: usize,
        seed: u64,
    ) -> Dataset {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut accounts_csv = String::from("accountId,transactionsUrl\n");
        let mut files = Vec::with_capacity(accounts + 1);
        let mut expected = Vec::with_capacity(transactions);
        for a in 0..accounts {
            let account_id = first_account + a as i64;
            let count = transactions / accounts + usize::from(a < transactions % accounts);
            writeln!(accounts_csv, "{account_id},transactions/{account_id}.csv").unwrap();
            let mut csv = String::with_capacity(16 + count * 20);
            csv.push_str("id,amount\n");
            for id in 1..=count as i64 {
                let cents = rng.i64(-10_000_000..=10_000_000);
                let amount = format_cents(cents);
                writeln!(csv, "{id},{amount}").unwrap();
                expected.push(ExpectedRow {
                    account_id,
                    id,
                    amount,
                });
            }
            files.push((
                format!("{prefix}/transactions/{account_id}.csv"),
                Bytes::from(csv),
            ));
        }
        files.push((format!("{prefix}/accounts.csv"), Bytes::from(accounts_csv)));
        Dataset {
            files,
            expected,
            accounts,
        }
    }

    /// Sum of the expected amounts, in cents (amounts with up to 2 decimals).
    pub fn expected_sum_cents(&self) -> i128 {
        self.expected.iter().map(|r| parse_cents(&r.amount)).sum()
    }
}

/// `-1250` → `"-12.50"`.
pub fn format_cents(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// `"-12.5"` → `-1250`; amounts with more than two decimals are not money.
pub fn parse_cents(amount: &str) -> i128 {
    let (negative, digits) = match amount.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, amount.trim_start_matches('+')),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let frac = format!("{frac:0<2}");
    assert!(frac.len() == 2, "{amount} has more than two decimals");
    let value = int.parse::<i128>().unwrap_or(0) * 100 + frac.parse::<i128>().unwrap();
    if negative {
        -value
    } else {
        value
    }
}

pub use sluice_messages::units::group;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_data_is_deterministic_and_complete() {
        let a = Dataset::generate(3, 10, 7);
        let b = Dataset::generate(3, 10, 7);
        assert_eq!(a.files, b.files);
        assert_eq!(a.expected.len(), 10);
        assert_eq!(a.files.len(), 4);
        let rows_in_files: usize = a
            .files
            .iter()
            .filter(|(p, _)| p.starts_with("/transactions/"))
            .map(|(_, body)| body.iter().filter(|&&b| b == b'\n').count() - 1)
            .sum();
        assert_eq!(rows_in_files, 10);
        assert_eq!(
            a.expected_sum_cents(),
            a.expected
                .iter()
                .map(|r| parse_cents(&r.amount))
                .sum::<i128>()
        );
    }

    #[test]
    fn cents_round_trip() {
        for c in [-1250, 0, 5, -5, 1_234_567_890_199] {
            assert_eq!(parse_cents(&format_cents(c)), c as i128);
        }
        assert_eq!(parse_cents("0.1"), 10);
        assert_eq!(parse_cents("-12.5"), -1250);
    }
}
