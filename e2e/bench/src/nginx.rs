//! The nginx configuration of the comparison: a reverse proxy with a keep-alive upstream pool,
//! no access log (ours keeps none per request either), `worker_processes` equal to our
//! sidecar's worker threads, and keep-alive connections never closed by request count (nginx
//! closes them after 1000 requests by default; ours does not, and the load generator would
//! count the reconnects).

use std::net::SocketAddr;
use std::path::Path;

/// One nginx instance listening on `listen` and proxying to `upstream`.
pub fn config(prefix: &Path, listen: SocketAddr, upstream: SocketAddr, workers: usize) -> String {
    let prefix = prefix.display();
    format!(
        "daemon off;
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    upstream next_hop {{
        server {upstream};
        keepalive 128;
        keepalive_requests 1000000;
    }}
    server {{
        listen {listen} reuseport;
        keepalive_requests 1000000;
        location / {{
            proxy_pass http://next_hop;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host $http_host;
        }}
    }}
}}
"
    )
}
