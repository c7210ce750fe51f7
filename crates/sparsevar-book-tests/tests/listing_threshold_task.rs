//! The task-plugin tutorial's listing (book/listings/threshold-task), compiled and tested
//! here exactly as a reader's `plugins/threshold-task` crate would be: its src/lib.rs as the
//! module `threshold_task`, its tests/threshold.rs as this file's tests, and the book's
//! blocks marked `listing=threshold-task` run with the plugin registered.

#[allow(dead_code)]
#[path = "../../../book/listings/threshold-task/src/lib.rs"]
mod threshold_task;

mod common;

include!("../../../book/listings/threshold-task/tests/threshold.rs");

#[test]
fn book_blocks_using_the_listing() {
    common::check_listing_blocks("threshold-task", common::registry_with(&[(&threshold_task::PLUGIN, "threshold-task")]));
}
