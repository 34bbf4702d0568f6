//! Running a routed request: provider adapters and the resilience around
//! them (timeouts, retries, fallback, circuit breakers).

pub mod ensemble;
pub mod judge;
pub mod providers;
pub mod resilience;
