//! A small router: method plus path pattern to an async handler.
//!
//! Patterns are literal segments and `:name` captures, e.g.
//! `/users/:id/notes`. A path no route matches gets 404; a path that
//! matches only for other methods gets 405 with an `Allow` header.
//!
//! ```rust,ignore
//! use nacre_sdk::router::{Params, Router};
//! use nacre_sdk::wstd::http::{Body, Error, Request, Response};
//!
//! async fn hello(_: Request<Body>, p: Params) -> Result<Response<Body>, Error> {
//!     Ok(Response::new(format!("hello, {}\n", p.get("name").unwrap_or("?")).into()))
//! }
//!
//! async fn handle(req: Request<Body>) -> Result<Response<Body>, Error> {
//!     Router::new().get("/hello/:name", hello).handle(req).await
//! }
//! nacre_sdk::serve!(handle);
//! ```

use std::future::Future;
use std::pin::Pin;

use wstd::http::{Body, Error, Method, Request, Response, StatusCode};

/// The `:name` captures of the matched pattern.
///
/// ```rust,ignore
/// async fn user(_req: Request<Body>, p: Params) -> Result<Response<Body>, Error> {
///     Ok(Response::new(format!("user {}\n", p.get("id").unwrap_or("?")).into()))
/// }
/// ```
#[derive(Debug, Default, Clone)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// The segment captured as `:name`.
    ///
    /// ```rust,ignore
    /// let id = params.get("id").unwrap_or_default();
    /// ```
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Error>>>>;
type Handler = Box<dyn Fn(Request<Body>, Params) -> BoxFuture>;

/// Routes requests to handlers by method and path.
///
/// ```rust,ignore
/// let router = Router::new().get("/users/:id", user).post("/users", create);
/// ```
#[derive(Default)]
pub struct Router {
    routes: Vec<(Method, Vec<String>, Handler)>,
}

impl Router {
    /// An empty router (everything 404).
    ///
    /// ```rust,ignore
    /// let router = Router::new();
    /// ```
    pub fn new() -> Router {
        Router::default()
    }

    /// Routes `method` requests matching `pattern` to `handler`.
    ///
    /// ```rust,ignore
    /// let router = Router::new().route(Method::PUT, "/notes/:id", put_note);
    /// ```
    pub fn route<F, Fut>(mut self, method: Method, pattern: &str, handler: F) -> Router
    where
        F: Fn(Request<Body>, Params) -> Fut + 'static,
        Fut: Future<Output = Result<Response<Body>, Error>> + 'static,
    {
        let segments = segments(pattern).map(str::to_string).collect();
        self.routes.push((
            method,
            segments,
            Box::new(move |req, params| Box::pin(handler(req, params))),
        ));
        self
    }

    /// `GET` requests matching `pattern`.
    ///
    /// ```rust,ignore
    /// let router = Router::new().get("/hello/:name", hello);
    /// ```
    pub fn get<F, Fut>(self, pattern: &str, handler: F) -> Router
    where
        F: Fn(Request<Body>, Params) -> Fut + 'static,
        Fut: Future<Output = Result<Response<Body>, Error>> + 'static,
    {
        self.route(Method::GET, pattern, handler)
    }

    /// `POST` requests matching `pattern`.
    ///
    /// ```rust,ignore
    /// let router = Router::new().post("/incr", incr);
    /// ```
    pub fn post<F, Fut>(self, pattern: &str, handler: F) -> Router
    where
        F: Fn(Request<Body>, Params) -> Fut + 'static,
        Fut: Future<Output = Result<Response<Body>, Error>> + 'static,
    {
        self.route(Method::POST, pattern, handler)
    }

    /// Runs the first route matching `request`'s method and path.
    ///
    /// ```rust,ignore
    /// async fn handle(req: Request<Body>) -> Result<Response<Body>, Error> {
    ///     Router::new().get("/", index).handle(req).await
    /// }
    /// ```
    pub async fn handle(&self, request: Request<Body>) -> Result<Response<Body>, Error> {
        let path = request.uri().path().to_string();
        let mut allowed = Vec::new();
        for (method, pattern, handler) in &self.routes {
            let Some(params) = matches(pattern, &path) else {
                continue;
            };
            if method == request.method() {
                return handler(request, params).await;
            }
            allowed.push(method.as_str());
        }
        if allowed.is_empty() {
            return status(StatusCode::NOT_FOUND, format!("no route for {path}\n"));
        }
        let allow = allowed.join(", ");
        let mut r = status(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{path} answers {allow}\n"),
        )?;
        r.headers_mut().insert("allow", allow.parse()?);
        Ok(r)
    }
}

/// A plain-text response with `status`.
///
/// ```rust,ignore
/// return nacre_sdk::router::status(StatusCode::BAD_REQUEST, "say hello\n".into());
/// ```
pub fn status(status: StatusCode, text: String) -> Result<Response<Body>, Error> {
    let mut r = Response::new(Body::from(text));
    *r.status_mut() = status;
    Ok(r)
}

fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

fn matches(pattern: &[String], path: &str) -> Option<Params> {
    let mut params = Vec::new();
    let mut parts = segments(path);
    for want in pattern {
        let got = parts.next()?;
        match want.strip_prefix(':') {
            Some(name) => params.push((name.to_string(), got.to_string())),
            None if want == got => {}
            None => return None,
        }
    }
    parts.next().is_none().then_some(Params(params))
}
