//! The sequential writer and reader, now in [`direct`](crate::direct): this module
//! re-exports them for one release so code written against `pagebuf::sequential` keeps
//! compiling. Use `pagebuf::direct::{DirectWriter, DirectReader}`.

pub use crate::direct::{
    DirectReader, DirectReaderOptions, DirectWriter, DirectWriterOptions, SequentialOptions,
    DEFAULT_DEPTH,
};
