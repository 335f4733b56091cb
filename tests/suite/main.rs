//! The integration tests, in one binary: Azurite-backed tests of each function and command, the
//! Function App files, and the exactness suite. One binary links the crate once; `cargo test
//! --test suite MODULE::` runs one area. (Keys-off identity is `tests/keys_off`: its process
//! must trust a test CA before its first HTTP client.)

mod support;

mod app_layout;
mod cli;
mod connections;
mod consumer_adf;
mod consumer_direct;
mod continuations;
mod doctor;
mod doctor_rights;
mod doctor_scope;
mod error_lines;
mod events;
mod events_renamed;
mod exactness;
mod hns;
mod job_list;
mod job_summaries;
mod metadata_case;
mod poison;
mod producer;
mod prune;
mod prune_replay;
mod reconciler;
mod restore;
mod restore_in_place;
mod restore_jobs;
mod restore_scope;
mod restore_target;
mod sas_copies;
mod shards;
mod standalone;
mod telemetry;
mod telemetry_jobs;
mod template;
mod template_grants;
mod tidy;
mod verify;
mod worm;
