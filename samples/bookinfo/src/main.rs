//! `mesh-bookinfo`: the Bookinfo-like sample every Istio user knows, one binary for all four
//! services so that one image (or one local binary) runs them all.
//!
//! - `productpage` renders a book's page from `details` and `reviews`;
//! - `details` answers the book's facts;
//! - `reviews` answers two reviews: `v1` without stars, `v2` with black stars and `v3` with red
//!   stars, both of which ask `ratings`;
//! - `ratings` answers the stars.
//!
//! Each service forwards the trace and routing headers of the request it serves (`x-request-id`,
//! B3, W3C trace context, and `end-user`), as Istio's Bookinfo does: that is what lets a
//! VirtualService route a logged-in user's requests deep in the call graph, and lets traces join.
//! The timeouts are Bookinfo's too (productpage → reviews 3 s with one retry, reviews → ratings
//! 10 s), so Istio's fault-injection and timeout tasks show the same outcomes.

#![forbid(unsafe_code)]

mod details;
mod productpage;
mod ratings;
mod reviews;
mod server;
mod upstream;

use clap::{Parser, ValueEnum};

/// One of Bookinfo's services.
#[derive(Debug, Parser)]
#[command(name = "mesh-bookinfo", about, disable_version_flag = true)]
struct Cli {
    /// Which service to be.
    #[arg(value_enum)]
    service: Service,
    /// The version label this instance reports (`reviews` changes behaviour with it: v1, v2, v3).
    #[arg(long, env = "SERVICE_VERSION", default_value = "v1")]
    version: String,
    /// The port to serve HTTP/1.1 on; Bookinfo's services all use 9080.
    #[arg(long, env = "PORT", default_value_t = 9080)]
    port: u16,
    /// Where `details` is (host:port), for productpage.
    #[arg(long, env = "DETAILS_ADDRESS", default_value = "details:9080")]
    details: String,
    /// Where `reviews` is (host:port), for productpage.
    #[arg(long, env = "REVIEWS_ADDRESS", default_value = "reviews:9080")]
    reviews: String,
    /// Where `ratings` is (host:port), for reviews v2 and v3.
    #[arg(long, env = "RATINGS_ADDRESS", default_value = "ratings:9080")]
    ratings: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Service {
    Productpage,
    Details,
    Reviews,
    Ratings,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let app = server::App {
        service: match cli.service {
            Service::Productpage => server::Role::Productpage { details: cli.details, reviews: cli.reviews },
            Service::Details => server::Role::Details,
            Service::Reviews => server::Role::Reviews { ratings: cli.ratings },
            Service::Ratings => server::Role::Ratings,
        },
        version: cli.version,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    runtime.block_on(server::serve(app, ([0, 0, 0, 0], cli.port).into()))
}
