//! The amount parser against a plain statement of the rule: optional sign,
//! digits with at most one dot, at least one and at most 60 digits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_messages::Amount;

fn is_amount(text: &str) -> bool {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    let count = digits.chars().filter(char::is_ascii_digit).count();
    let dots = digits.chars().filter(|&c| c == '.').count();
    dots <= 1 && digits.chars().all(|c| c.is_ascii_digit() || c == '.') && (1..=60).contains(&count)
}

fuzz_target!(|text: &str| {
    match text.parse::<Amount>() {
        Ok(amount) => {
            assert!(is_amount(text), "accepted {text:?}");
            assert_eq!(amount.as_str(), text);
            let json = serde_json::to_string(&amount).unwrap();
            assert_eq!(serde_json::from_str::<Amount>(&json).unwrap(), amount);
        }
        Err(_) => assert!(!is_amount(text), "refused {text:?}"),
    }
});
