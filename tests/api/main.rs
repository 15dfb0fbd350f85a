//! API tests: the real router on a fresh PostgreSQL database per test.

mod articles;
mod auth;
mod cli;
mod comments;
mod contract;
mod faults;
mod headers;
mod http;
mod memory;
mod metrics;
mod migrate;
mod oidc;
mod openapi;
mod policy;
mod process;
mod profiles;
mod rate_limit;
mod reads;
mod replica;
mod server;
mod sessions;
mod statements;
mod support;
mod tags;
mod traces;
mod users;
