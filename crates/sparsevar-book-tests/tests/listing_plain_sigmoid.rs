//! The attention-plugin tutorial's listing (book/listings/plain-sigmoid), compiled and tested
//! here exactly as a reader's `plugins/plain-sigmoid` crate would be: its src/lib.rs as the
//! module `plain_sigmoid`, its tests/plain_sigmoid.rs as this file's tests, and the book's
//! blocks marked `listing=plain-sigmoid` run with the plugin registered.

#[allow(dead_code)]
#[path = "../../../book/listings/plain-sigmoid/src/lib.rs"]
mod plain_sigmoid;

mod common;

include!("../../../book/listings/plain-sigmoid/tests/plain_sigmoid.rs");

#[test]
fn book_blocks_using_the_listing() {
    common::check_listing_blocks("plain-sigmoid", common::registry_with(&[(&plain_sigmoid::PLUGIN, "plain-sigmoid")]));
}
