//! The service's edge: what stands between the network and the routes (the
//! client's address, rate limits, security headers, connection limits).

pub mod client_ip;
pub mod connection;
pub mod headers;
pub mod rate_limit;
pub mod request_id;
pub mod server;
