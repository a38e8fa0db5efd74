//! The Origin's [`Source`]: the local live store, the store of record for the live window.

use super::{CachedObject, ObjectKey, Source, SourceError};
use crate::names::{RenditionName, StreamName};
use crate::store::{Object, Store};
use std::sync::Arc;

/// Turns a store object into the response a cache replays (header policy belongs to `serve`,
/// which supplies it).
pub type Represent = fn(&Object) -> CachedObject;

/// A stream's thumbnail: `/live/<stream>/thumbnail.jpg`.
pub const THUMBNAIL_FILE: &str = "thumbnail.jpg";

/// Fills from the in-memory live store: `/live/<stream>/<rendition>/<file>`.
pub struct StoreSource {
    store: Arc<Store>,
    represent: Represent,
}

impl std::fmt::Debug for StoreSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSource").finish_non_exhaustive()
    }
}

impl StoreSource {
    /// A source over `store`, representing objects with `represent`.
    pub fn new(store: Arc<Store>, represent: Represent) -> Self {
        Self { store, represent }
    }

    /// Looks an object up in the store by its cache key's path.
    pub fn lookup(&self, key: &ObjectKey) -> Option<Object> {
        let mut parts = key.path().strip_prefix("/live/")?.split('/');
        let stream = StreamName::parse(parts.next()?).ok()?;
        let second = parts.next()?;
        let entry = self.store.stream(&stream)?;
        match parts.next() {
            None if second == "index.m3u8" => entry.multivariant(),
            None if second == THUMBNAIL_FILE => entry.thumbnail(),
            None => None,
            Some(file) if parts.next().is_none() => {
                let rendition = RenditionName::parse(second).ok()?;
                if file == "index.m3u8" {
                    entry.media_playlist(&rendition)
                } else {
                    entry.file(&rendition, file)
                }
            }
            Some(_) => None,
        }
    }
}

impl Source for StoreSource {
    async fn fetch(&self, key: &ObjectKey) -> Result<CachedObject, SourceError> {
        Ok(self
            .lookup(key)
            .map_or_else(CachedObject::not_found, |object| (self.represent)(&object)))
    }
}
