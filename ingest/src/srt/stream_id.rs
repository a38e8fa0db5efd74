//! The SRT `streamid` a publisher connects with -> application and stream key.

use crate::rtmp::StreamKey;

/// What a publisher asked for in its `streamid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamTarget {
    /// The application (`live`), or `None` when the streamid named only a key.
    pub app: Option<String>,
    /// The stream key.
    pub key: StreamKey,
}

/// Why a `streamid` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamIdError {
    /// No streamid, or an empty key.
    #[error("no stream key in the streamid")]
    Missing,
    /// The access-control form is malformed (an entry without `=`, no `r=`).
    #[error("malformed access-control streamid")]
    Malformed,
    /// The access-control form asks for something other than publishing (`m=request`).
    #[error("streamid mode {0:?} is not publish")]
    NotPublish(String),
}

/// Parses `<key>`, `<app>/<key>` or `#!::r=<app>/<key>,m=publish` (other keys such as `u=` and
/// `s=` are ignored; `m` defaults to publish).
pub fn parse_stream_id(stream_id: Option<&str>) -> Result<StreamTarget, StreamIdError> {
    let raw = stream_id.unwrap_or_default().trim();
    let resource = if let Some(entries) = raw.strip_prefix("#!::") {
        let mut resource = None;
        for entry in entries.split(',').filter(|e| !e.is_empty()) {
            let (name, value) = entry.split_once('=').ok_or(StreamIdError::Malformed)?;
            match name.trim() {
                "r" => resource = Some(value.trim()),
                "m" if value.trim() != "publish" => {
                    return Err(StreamIdError::NotPublish(value.trim().to_string()))
                }
                _ => {}
            }
        }
        resource.ok_or(StreamIdError::Malformed)?
    } else {
        raw
    };
    let (app, key) = match resource.rsplit_once('/') {
        Some((app, key)) => (Some(app.trim_matches('/').to_string()), key),
        None => (None, resource),
    };
    if key.is_empty() {
        return Err(StreamIdError::Missing);
    }
    Ok(StreamTarget {
        app: app.filter(|a| !a.is_empty()),
        key: StreamKey::new(key),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn target(app: Option<&str>, key: &str) -> StreamTarget {
        StreamTarget {
            app: app.map(str::to_string),
            key: StreamKey::new(key),
        }
    }

    #[test]
    fn plain_and_access_control_forms() {
        assert_eq!(parse_stream_id(Some("demo")), Ok(target(None, "demo")));
        assert_eq!(
            parse_stream_id(Some("live/demo")),
            Ok(target(Some("live"), "demo"))
        );
        assert_eq!(
            parse_stream_id(Some("#!::r=live/demo,m=publish")),
            Ok(target(Some("live"), "demo"))
        );
        assert_eq!(
            parse_stream_id(Some("#!::u=alice,r=demo")),
            Ok(target(None, "demo"))
        );
        assert_eq!(
            parse_stream_id(Some("#!::r=live/demo,m=request")),
            Err(StreamIdError::NotPublish("request".into()))
        );
        assert_eq!(
            parse_stream_id(Some("#!::m=publish")),
            Err(StreamIdError::Malformed)
        );
        assert_eq!(
            parse_stream_id(Some("#!::r")),
            Err(StreamIdError::Malformed)
        );
        assert_eq!(parse_stream_id(None), Err(StreamIdError::Missing));
        assert_eq!(parse_stream_id(Some("live/")), Err(StreamIdError::Missing));
    }

    proptest! {
        #[test]
        fn any_stream_id_parses_or_is_refused(s in ".{0,600}") {
            let _ = parse_stream_id(Some(&s));
        }
    }
}
