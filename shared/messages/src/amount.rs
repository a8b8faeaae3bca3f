use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An exact decimal amount such as `-12.50`, `0.1` or `12345678901.99`.
///
/// Kept as validated text: PostgreSQL's `NUMERIC` parses it, so no binary
/// floating point ever sees the value and trailing zeros survive.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Amount(String);

/// Generous for money, small enough that a hostile file cannot smuggle a
/// megabyte-long number into the database.
const MAX_DIGITS: usize = 60;

/// Text that is not an amount: what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidAmount(String);

impl fmt::Display for InvalidAmount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "amount {:?} is not a decimal number like -12.50 (at most {MAX_DIGITS} digits)",
            self.0
        )
    }
}

impl std::error::Error for InvalidAmount {}

impl Amount {
    /// The amount's text, exactly as read (a sign, digits, at most one point).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Amount {
    type Err = InvalidAmount;

    /// Accepts an optional sign, digits and an optional fraction (`1`, `-1.5`,
    /// `+.5`, `2.`). Rejects exponents, `NaN`, `Infinity`, thousands
    /// separators and empty strings: PostgreSQL would accept some of these,
    /// but none of them is an amount.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidAmount(s.to_owned());
        let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if int.len() + frac.len() == 0
            || int.len() + frac.len() > MAX_DIGITS
            || !all_digits(int)
            || !all_digits(frac)
        {
            return Err(invalid());
        }
        Ok(Amount(s.to_owned()))
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for Amount {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Amount".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": format!(
                "An exact decimal as text: optional sign, digits, optional fraction, \
                 at most {MAX_DIGITS} digits in all; no exponent, NaN or separators."
            ),
            "pattern": r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)$",
            "maxLength": MAX_DIGITS + 2,
            "examples": ["-12.50", "0.1", "12345678901.99"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_exact_decimals() {
        for ok in [
            "-12.50",
            "0.1",
            "12345678901.99",
            "7",
            "+3",
            ".5",
            "2.",
            "-0.000001",
        ] {
            assert_eq!(ok.parse::<Amount>().unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_what_is_not_an_amount() {
        let too_long = "9".repeat(61);
        for bad in [
            "", "-", ".", "1e5", "NaN", "Infinity", "1,000", "12.5.1", " 1", "0x10", &too_long,
        ] {
            assert!(bad.parse::<Amount>().is_err(), "{bad:?} accepted");
        }
    }
}
