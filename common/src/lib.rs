//! The one config model every program of the mesh shares.
//!
//! `api` holds Istio's resources as Rust types (the CRDs are generated from them), `validate`
//! checks them with Istio's rules and names the object and field of every problem, `registry`
//! describes the services and endpoints the mesh knows, and `compile` turns resources plus
//! registry into the tables a proxy routes by. The controller forwards resources; each proxy
//! compiles its own view with this crate, so the model is compiled in one place and tested once.
#![forbid(unsafe_code)]

pub mod api;
pub mod compile;
pub mod crds;
pub mod hosts;
pub mod registry;
pub mod resource;
pub mod validate;
