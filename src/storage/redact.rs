//! Removes secrets from text before it reaches a log or an error: SAS signatures in URLs,
//! account keys in connection strings, bearer tokens and SharedKey authorizations.

/// Field names whose values are secret, each followed by the character that starts the value.
const SECRET_FIELDS: [(&str, char); 5] = [
    ("sig", '='),
    ("accountkey", '='),
    ("sharedaccesssignature", '='),
    ("bearer", ' '),
    ("sharedkey", ' '),
];

/// `text` with the value of every secret field replaced by `REDACTED`.
pub fn redact_secrets(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut at = 0;
    while at < text.len() {
        let found = SECRET_FIELDS.iter().find_map(|(field, separator)| {
            let starts_field = lower[at..].starts_with(field)
                && text[at + field.len()..].starts_with(*separator)
                && !text[..at]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_ascii_alphanumeric());
            starts_field.then_some(at + field.len() + 1)
        });
        match found {
            Some(value_start) => {
                let value_end = text[value_start..]
                    .find(['&', ';', ' ', '"', '\'', ')', '\n', ','])
                    .map_or(text.len(), |i| value_start + i);
                out.push_str(&text[copied..value_start]);
                out.push_str("REDACTED");
                copied = value_end;
                at = value_end.max(at + 1);
            }
            None => at += text[at..].chars().next().map_or(1, char::len_utf8),
        }
    }
    out.push_str(&text[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_keys_and_tokens_are_removed() {
        let text = "error sending request for url (http://h/c/b?sv=2024&sig=abc%2Bdef%3D&se=x): \
                    AccountName=a;AccountKey=c2VjcmV0==;BlobEndpoint=u Authorization: Bearer eyJ0 \
                    SharedKey a:c2lnbmF0dXJl";
        let redacted = redact_secrets(text);
        for secret in ["abc%2Bdef%3D", "c2VjcmV0==", "eyJ0", "c2lnbmF0dXJl"] {
            assert!(!redacted.contains(secret), "{redacted}");
        }
        assert!(redacted.contains("sig=REDACTED&se=x"), "{redacted}");
        assert!(
            redacted.contains("AccountName=a;AccountKey=REDACTED;"),
            "{redacted}"
        );
    }

    #[test]
    fn ordinary_text_is_unchanged() {
        for text in ["design=1", "no secrets here ü", "", "signature=5"] {
            assert_eq!(redact_secrets(text), text);
        }
    }
}
