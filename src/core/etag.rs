//! ETags as the diff and the naming compare them: opaque strings, quotes stripped.
//!
//! Azure quotes ETags in headers (`"0x8DC…"`) but not in listings (`0x8DC…`); the same version
//! must compare equal whichever way it was read.

/// The ETag without surrounding quotes.
pub fn normalize_etag(etag: &str) -> &str {
    etag.trim().trim_matches('"')
}

/// The ETag quoted, as `If-Match` and `x-ms-source-if-match` expect it.
pub fn quoted_etag(etag: &str) -> String {
    format!("\"{}\"", normalize_etag(etag))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_do_not_matter() {
        assert_eq!(normalize_etag("\"0x8DC1\""), "0x8DC1");
        assert_eq!(normalize_etag("0x8DC1"), "0x8DC1");
        assert_eq!(quoted_etag("0x8DC1"), "\"0x8DC1\"");
        assert_eq!(quoted_etag("\"0x8DC1\""), "\"0x8DC1\"");
    }
}
