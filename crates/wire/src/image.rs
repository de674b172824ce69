//! Image helpers shared by codecs: `data:` URLs in and out, and media-type sniffing for fetched bytes.

use base64::Engine as _;

/// A parsed `data:<media type>;base64,<payload>` URL. The payload stays base64 (most providers want it so).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataUrl<'a> {
    pub media_type: &'a str,
    pub base64: &'a str,
}

/// Parses a base64 `data:` URL; `None` for anything else (http URLs, non-base64 data URLs).
pub fn parse_data_url(url: &str) -> Option<DataUrl<'_>> {
    let rest = url.strip_prefix("data:")?;
    let (meta, payload) = rest.split_once(',')?;
    let media_type = meta.strip_suffix(";base64")?;
    let media_type = media_type.split(';').next().unwrap_or(media_type);
    Some(DataUrl { media_type: if media_type.is_empty() { "application/octet-stream" } else { media_type }, base64: payload })
}

pub fn is_http_url(url: &str) -> bool {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

pub fn to_data_url(media_type: &str, bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 4 / 3 + media_type.len() + 16);
    s.push_str("data:");
    s.push_str(media_type);
    s.push_str(";base64,");
    base64::engine::general_purpose::STANDARD.encode_string(bytes, &mut s);
    s
}

/// Recognises the image formats vision models take, from their magic bytes.
pub fn sniff_media_type(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(&[0x89, b'P', b'N', b'G']) {
        Some("image/png")
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_urls() {
        let d = parse_data_url("data:image/png;base64,iVBORw0KGgo=").unwrap();
        assert_eq!((d.media_type, d.base64), ("image/png", "iVBORw0KGgo="));
        assert!(parse_data_url("https://x/y.png").is_none());
        assert!(parse_data_url("data:text/plain,hello").is_none());
        assert_eq!(to_data_url("image/gif", b"GIF89a"), "data:image/gif;base64,R0lGODlh");
        assert!(is_http_url("HTTPS://x"));
        assert_eq!(sniff_media_type(b"\x89PNG\r\n"), Some("image/png"));
    }
}
