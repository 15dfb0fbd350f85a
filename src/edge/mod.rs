//! The service's edge: what stands between the network and the routes (the
//! client's address, rate limits, security headers, connection limits).

pub mod connection;
pub mod headers;
pub mod request_id;
pub mod server;
