//! One module per route. Each handler is a plain async function over the ports it
//! needs and nothing else, so each Lambda gets exactly the permissions it uses.

mod connect;
mod default_route;
mod disconnect;
mod send_message;

pub use connect::{ConnectRequest, connect};
pub use default_route::{default_route, history};
pub use disconnect::{DisconnectRequest, disconnect};
pub use send_message::{MessageRequest, send_message};

use crate::ports::{PostError, StoreError};

/// A handler could not do its work; the edge turns this into a Lambda error
/// (a refused upgrade on `$connect`, an `Internal server error` frame otherwise).
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("replying to the sender failed: {0}")]
    Reply(#[from] PostError),
    #[error("malformed event: {0}")]
    MalformedEvent(String),
}

#[cfg(test)]
pub(crate) mod testing {
    use chrono::{DateTime, Utc};

    use crate::time::parse_iso;

    pub fn at(iso: &str) -> DateTime<Utc> {
        parse_iso(iso).expect("test times are valid")
    }
}
