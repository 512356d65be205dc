//! `echo`: answers with the request it received, as JSON: method, path,
//! query, headers and body. Useful to see what a guest is given (for
//! example the route prefix removed and `x-forwarded-prefix` added).

use serde_json::{Map, Value, json};
use wstd::http::{Body, Error, Request, Response};

#[wstd::http_server]
async fn main(request: Request<Body>) -> Result<Response<Body>, Error> {
    let (parts, mut body) = request.into_parts();
    let mut headers = Map::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match headers.get_mut(name.as_str()) {
            Some(Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(&value);
            }
            _ => {
                headers.insert(name.as_str().to_string(), Value::String(value));
            }
        }
    }
    let bytes = body.contents().await?;
    let reply = json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body": String::from_utf8_lossy(bytes),
    });
    let mut response = Response::new(Body::from_json(&reply)?);
    response
        .headers_mut()
        .insert("content-type", "application/json".parse()?);
    Ok(response)
}
