//! API tests: the real router on a fresh PostgreSQL database per test.

mod support;
mod users;
mod server;
mod process;
mod profiles;
mod auth;
mod http;
