//! The integration suite: the real router on a real TCP port, a real database (a fresh
//! SQLite file or a fresh PostgreSQL database per test), driven over HTTP. Every test runs
//! on both backends through [`both_backends!`].

mod helpers;

mod at_rest;
mod audit;
mod auth;
mod cli_guard;
mod failover;
mod guard;
mod isolation;
mod keys;
mod logs;
mod messages;
mod multi_instance;
mod openapi;
mod policy;
mod realtime;
mod ringcentral;
mod shared_limits;
mod smpp;
// The SMPP test peer; not every helper is used by every test yet.
#[allow(dead_code)]
mod smpp_peer;
mod twilio;
mod webhooks;
mod whatsapp;
