//! The Routing API as its clients and the server see it on the wire
//! (../shared/spec/routing-api.md B.1-B.6): models with upstream's JSON field names and order,
//! the error body, and event names. Shared by the routing-api server, `rtr`, tcp-router,
//! route-emitter and gorouter so no crate keeps its own copy.

pub mod models;

pub use models::{
    ErrorBody, EventAction, HttpRoute, ModificationTag, RouterGroup, RouterGroupType,
    TcpRouteMapping,
};
