//! End-to-end tests: real `orgsyncd`, `orgsync` and `orgsync-keytool`
//! processes (and in-process instances) on loopback in temporary
//! directories. One test binary, one module per area: linking one binary
//! instead of one per file saves minutes of CI, and the test harness
//! schedules every test over the cores instead of binary after binary.
//! Run one area with `cargo test --test e2e <module>::`.

mod support;

mod backup;
mod bad_input;
mod cli_manners;
mod cli_output;
mod crash_campaign;
mod doctor;
mod e2e_catchup;
mod e2e_coalesce;
mod e2e_config;
mod e2e_crash;
mod e2e_import;
mod e2e_resume;
mod e2e_sync;
mod e2e_unpaired;
mod e2e_versions;
mod faults;
mod fuzz_corpus;
mod governance;
mod governance_graph;
mod hostile;
mod limits;
mod local_files;
mod partner_claims;
mod pending_peers;
mod protocol_pipeline;
mod rotation;
mod service;
mod stop_stress;
mod web;
mod web_browser;
mod web_browser_flow;
mod web_browser_partners;
mod web_browser_requests;
mod web_incoming;
mod web_outgoing;
mod web_partners;
mod web_requests;
