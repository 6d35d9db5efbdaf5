//! Images a tool shows a model: absolute paths (under the same path policy as files) or
//! `data:` URLs, checked for type and size and sent as data URLs.

use base64::Engine;

use crate::files;

/// Most images one call may send.
pub const MAX_IMAGES: usize = 5;
/// Largest image accepted.
pub const MAX_IMAGE_BYTES: usize = 20 * 1024 * 1024;

/// The image types models accept, by their leading bytes.
fn media_type(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
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

/// Why an image cannot be sent.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("a data URL needs a comma before its data")]
    NoComma,
    #[error("only base64 data URLs are accepted")]
    NotBase64,
    #[error("over the {MAX_IMAGE_BYTES}-byte limit per image")]
    TooLarge,
    #[error("the data URL's base64 is invalid: {0}")]
    BadBase64(#[from] base64::DecodeError),
    #[error("declared {declared} but the data is {found}")]
    Mislabelled {
        declared: String,
        found: &'static str,
    },
    #[error("not a PNG, JPEG, GIF or WebP image")]
    NotAnImage,
    #[error(transparent)]
    File(#[from] files::FileError),
}

/// One image as a data URL, or why it cannot be sent. Blocking (reads the disk).
pub fn load(given: &str, policy: &files::Policy) -> Result<String, ImageError> {
    let engine = base64::engine::general_purpose::STANDARD;
    if let Some(rest) = given.strip_prefix("data:") {
        let (header, data) = rest.split_once(',').ok_or(ImageError::NoComma)?;
        let Some(declared) = header.strip_suffix(";base64") else {
            return Err(ImageError::NotBase64);
        };
        if data.len() / 4 * 3 > MAX_IMAGE_BYTES {
            return Err(ImageError::TooLarge);
        }
        let bytes = engine.decode(data.trim())?;
        return match media_type(&bytes) {
            Some(found) if found == declared => Ok(given.to_string()),
            Some(found) => Err(ImageError::Mislabelled {
                declared: declared.to_string(),
                found,
            }),
            None => Err(ImageError::NotAnImage),
        };
    }
    let path = files::resolve(given, policy)?;
    let bytes = files::read_regular(&path, MAX_IMAGE_BYTES as u64)?;
    let kind = media_type(&bytes).ok_or(ImageError::NotAnImage)?;
    Ok(format!("data:{kind};base64,{}", engine.encode(&bytes)))
}

/// Short form of an image reference for notes and records (data URLs are long).
pub fn label(given: &str) -> String {
    match given.strip_prefix("data:") {
        Some(rest) => {
            let kind = rest.split([';', ',']).next().unwrap_or("image");
            format!("(inline {kind})")
        }
        None => given.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

    #[test]
    fn files_and_data_urls_are_checked_by_their_bytes() {
        let none = &files::Policy::default();
        let dir = crate::scratch::scratch_dir("images");
        let dir = dir.canonicalize().unwrap();
        std::fs::write(dir.join("a.png"), PNG).unwrap();
        std::fs::write(dir.join("fake.png"), b"not an image").unwrap();
        let url = load(&dir.join("a.png").display().to_string(), none).unwrap();
        assert!(url.starts_with("data:image/png;base64,"));
        assert_eq!(load(&url, none).unwrap(), url);
        assert!(matches!(
            load(&dir.join("fake.png").display().to_string(), none),
            Err(ImageError::NotAnImage)
        ));
        assert!(matches!(
            load("relative.png", none),
            Err(ImageError::File(files::FileError::Relative))
        ));
        let lying = url.replace("image/png", "image/jpeg");
        assert_eq!(
            load(&lying, none).unwrap_err().to_string(),
            "declared image/jpeg but the data is image/png"
        );
        assert_eq!(label(&url), "(inline image/png)");
    }
}
