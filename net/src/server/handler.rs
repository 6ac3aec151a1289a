//! What the application plugs into a shard: the [`Handler`] that answers requests.

use std::future::Future;

use crate::error::ProtocolError;
use crate::http::request::Request;
use crate::http::response::Responder;

/// The application a shard serves. One value per shard, built on that shard's thread.
pub trait Handler: 'static {
    /// Answers one request through `res`. Called one request at a time per
    /// connection, so pipelined requests are answered in order.
    ///
    /// A panic here closes this request's connection without an answer and is counted in
    /// [`crate::ShardStats::panics_total`]; the shard and its other connections go on.
    fn handle(&self, req: Request, res: &mut Responder<'_>) -> impl Future<Output = ()>;

    /// The JSON body answering a request that broke the protocol or a limit.
    fn protocol_error_body(&self, err: &ProtocolError) -> Vec<u8>;
}
