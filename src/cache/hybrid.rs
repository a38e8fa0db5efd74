//! Builds the foyer hybrid cache for media objects from the `[cache]` config section.

use super::{CachedObject, ObjectKey};
use crate::config::CacheConfig;
use foyer::{
    BlockEngineConfig, DeviceBuilder, Event, EventListener, FsDeviceBuilder, HybridCache,
    HybridCacheBuilder, HybridCachePolicy, PsyncIoEngineConfig, RecoverMode,
};
use std::sync::Arc;

/// Disk blocks: an object larger than a block is never written to disk, so blocks must hold
/// the largest segment.
pub const BLOCK_SIZE: usize = 64 * 1024 * 1024;

/// Why the cache could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The directory could not be created or the device opened.
    #[error("cannot open the disk cache in {dir}")]
    Device {
        /// The configured directory.
        dir: String,
        /// What foyer said.
        #[source]
        source: foyer::Error,
    },
    /// The directory could not be created.
    #[error("cannot create the disk cache directory {dir}")]
    Dir {
        /// The configured directory.
        dir: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// foyer refused the configuration.
    #[error("cannot build the cache")]
    Build(#[source] foyer::Error),
}

/// Counts objects leaving the memory tier (evicted to disk, or dropped without a disk tier).
struct EvictionCounter;

impl EventListener for EvictionCounter {
    type Key = ObjectKey;
    type Value = CachedObject;

    fn on_leave(&self, reason: Event, _key: &ObjectKey, _value: &CachedObject) {
        if reason == Event::Evict {
            metrics::counter!("headwater_cache_evictions_total", "tier" => "memory").increment(1);
        }
    }
}

/// Opens the hybrid cache: a byte-weighted memory tier, and a disk tier (write on eviction,
/// recovered after restart, flushed on close) when `disk` is non-zero.
pub async fn build(
    config: &CacheConfig,
) -> Result<HybridCache<ObjectKey, CachedObject>, OpenError> {
    let memory = usize::try_from(config.memory.as_u64()).unwrap_or(usize::MAX);
    let builder = HybridCacheBuilder::new()
        .with_name("headwater")
        .with_policy(HybridCachePolicy::WriteOnEviction)
        .with_flush_on_close(true)
        .with_event_listener(Arc::new(EvictionCounter))
        .memory(memory)
        .with_weighter(|key: &ObjectKey, value: &CachedObject| key.len() + value.weight())
        .storage();
    let disk = usize::try_from(config.disk.as_u64()).unwrap_or(usize::MAX);
    if disk == 0 {
        return builder.build().await.map_err(OpenError::Build);
    }
    let dir = config.dir.display().to_string();
    std::fs::create_dir_all(&config.dir).map_err(|source| OpenError::Dir {
        dir: dir.clone(),
        source,
    })?;
    let device = FsDeviceBuilder::new(&config.dir)
        .with_capacity(disk)
        .build()
        .map_err(|source| OpenError::Device {
            dir: dir.clone(),
            source,
        })?;
    let engine = BlockEngineConfig::new(device)
        .with_block_size(BLOCK_SIZE)
        // Room for a burst of evicted segments; beyond it the disk tier skips entries.
        .with_buffer_pool_size(2 * BLOCK_SIZE);
    builder
        .with_io_engine_config(PsyncIoEngineConfig::new())
        .with_engine_config(engine)
        .with_recover_mode(RecoverMode::Quiet)
        .build()
        .await
        .map_err(OpenError::Build)
}
