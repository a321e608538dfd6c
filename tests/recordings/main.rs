//! Recordings (SPEC section 7) through the real app on loopback ports:
//! real chunk uploads, real files on disk, real ffmpeg merges of test media
//! made with ffmpeg's lavfi sources, in memory and on real Redis with two
//! broker instances sharing one storage folder.

#[path = "../harness/mod.rs"]
mod harness;
#[path = "../api/helpers.rs"]
#[allow(dead_code)]
mod helpers;
#[path = "../harness/media.rs"]
mod media;

#[allow(dead_code)]
mod client;
mod errors;
mod flow;
mod indices;
mod socket;
