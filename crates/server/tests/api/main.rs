//! The server's API driven through `app()` (no socket) and, for streams,
//! over a real socket; runs go to the in-process mock on 127.0.0.1.

mod access;
mod bodies;
mod control;
mod forms;
mod openapi;
mod routes;
mod story;
mod streams;
mod util;
#[path = "../../../../tests/support/watchdog.rs"]
mod watchdog;
