//! Serving: accepting connections, each request read whole, classified, refused, faulted or
//! forwarded (over a pool of upstream connections) and its answer passed back byte for byte;
//! listings paged smaller, and re-signed when their SharedKey signature covered the query.

use std::{
    io,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpStream},
};

use super::{
    classify,
    conn::Conn,
    faults::{bad_gateway, error_answer},
    hns,
    refusals::{
        azure_refusal, is_container_properties, role_refusal, tags_refusal, with_header,
        worm_container, worm_refusal,
    },
    wire::{read_answer, read_request, Answer, Request, Wire},
    FaultKind, Injected, Shared, State,
};

/// Idle connections older than this are not reused: Azurite (Node) closes them after 5 s, and
/// a request written to a connection it is closing would be lost.
pub(super) const POOL_IDLE: Duration = Duration::from_secs(2);

pub(super) async fn forward(shared: &Shared, request: &Request, head: &[u8]) -> io::Result<Answer> {
    let pooled = {
        let mut pool = shared.pool();
        pool.retain(|(_, since)| since.elapsed() < POOL_IDLE);
        pool.pop().map(|(wire, _)| wire)
    };
    if let Some(mut wire) = pooled {
        match exchange(&mut wire, request, head).await {
            Ok(answer) => return finish(shared, wire, answer),
            // A kept-alive connection the server closed meanwhile: nothing was received, so the
            // request is sent again on a new one.
            Err((error, received)) if !received => drop(error),
            Err((error, _)) => return Err(error),
        }
    }
    let tcp = TcpStream::connect(shared.upstream).await?;
    let _ = tcp.set_nodelay(true);
    let conn = match &shared.tls {
        Some(tls) => tls.connect(tcp).await?,
        None => Conn::Plain(tcp),
    };
    let mut wire = Wire::new(conn);
    match exchange(&mut wire, request, head).await {
        Ok(answer) => finish(shared, wire, answer),
        Err((error, _)) => Err(error),
    }
}

/// Sends the request and reads the answer; on failure, says whether any answer was received.
pub(super) async fn exchange(
    wire: &mut Wire,
    request: &Request,
    head: &[u8],
) -> Result<Answer, (io::Error, bool)> {
    let mut bytes = Vec::with_capacity(head.len() + request.body.len());
    bytes.extend_from_slice(head);
    bytes.extend_from_slice(&request.body);
    wire.received = 0;
    wire.stream
        .write_all(&bytes)
        .await
        .map_err(|e| (e, false))?;
    read_answer(wire, request)
        .await
        .map_err(|e| (e, wire.received > 0))
}

pub(super) fn finish(shared: &Shared, wire: Wire, answer: Answer) -> io::Result<Answer> {
    if !answer.spent {
        shared.pool().push((wire, Instant::now()));
    }
    Ok(answer)
}

pub(super) async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors or similar: wait a little rather than spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        shared.state().stats.connections_accepted += 1;
        let shared = shared.clone();
        tokio::spawn(async move {
            let conn = match &shared.tls {
                Some(tls) => match tls.accept(stream).await {
                    Ok(conn) => conn,
                    Err(_) => return,
                },
                None => Conn::Plain(stream),
            };
            serve(Wire::new(conn), shared).await
        });
    }
}

/// Serves one client connection until it closes, a fault resets it, or something is unreadable.
pub(super) async fn serve(mut client: Wire, shared: Arc<Shared>) {
    loop {
        let request = match read_request(&mut client).await {
            Ok(Some(request)) => request,
            _ => return,
        };
        let class = classify(
            shared.service,
            &request.method,
            &request.target,
            &request.head.headers,
        );
        let (head, fault) = {
            let mut state = shared.state();
            *state.stats.requests.entry(class).or_default() += 1;
            let head = clamp(&mut state, &request).unwrap_or_else(|| request.raw_head.clone());
            let fault = state.decide(class);
            if let Some((kind, _, draw)) = fault {
                *state.stats.faults.entry((class, kind)).or_default() += 1;
                state.stats.injected.push(Injected {
                    class,
                    draw,
                    kind,
                    method: request.method.clone(),
                    target: redact_sas(&request.target),
                });
            }
            (head, fault)
        };
        if let Some((FaultKind::Delay, pause, _)) = fault {
            // The fault itself: an answer this much later.
            tokio::time::sleep(pause).await;
        }
        if matches!(fault, None | Some((FaultKind::Delay, _, _))) {
            let refusal = match role_refusal(&shared, class, &request)
                .or_else(|| tags_refusal(&shared, class, &request))
            {
                Some(refusal) => Some(refusal),
                // Boxed: the connection's future stays small on the proxy's thread stack.
                None => match Box::pin(worm_refusal(&shared, &request)).await {
                    Some(refusal) => Some(refusal),
                    None => Box::pin(azure_refusal(&shared, class, &request)).await,
                },
            };
            if let Some(refusal) = refusal {
                if client.stream.write_all(&refusal).await.is_err() || request.close {
                    return;
                }
                continue;
            }
        }
        let answer = match fault {
            Some((kind @ (FaultKind::InternalError | FaultKind::ServerBusy), _, _)) => {
                let bytes = error_answer(kind == FaultKind::ServerBusy, &request);
                if client.stream.write_all(&bytes).await.is_err() || request.close {
                    return;
                }
                continue;
            }
            Some((FaultKind::ResetBeforeForwarding, _, _)) => {
                client.reset();
                return;
            }
            // Paused above, before the rules were applied.
            Some((FaultKind::Delay, _, _)) => Box::pin(hns::answer(&shared, &request, &head)).await,
            Some((FaultKind::ResetAfterForwarding, _, _)) => {
                // Whatever Azurite answered, the client learns nothing of it.
                let _ = forward(&shared, &request, &head).await;
                client.reset();
                return;
            }
            None => Box::pin(hns::answer(&shared, &request, &head)).await,
        };
        let mut answer = match answer {
            Ok(answer) => answer,
            Err(error) => {
                shared.state().stats.upstream_errors += 1;
                let _ = client.stream.write_all(&bad_gateway(&error)).await;
                return;
            }
        };
        if worm_container(&shared, &request).is_some_and(|(_, blob)| blob.is_none())
            && is_container_properties(&request)
        {
            answer.head = with_header(&answer.head, "x-ms-has-immutability-policy", "true");
        }
        let mut bytes =
            Vec::with_capacity(answer.interim.len() + answer.head.len() + answer.body.len());
        bytes.extend_from_slice(&answer.interim);
        bytes.extend_from_slice(&answer.head);
        bytes.extend_from_slice(&answer.body);
        if client.stream.write_all(&bytes).await.is_err() || answer.close {
            // An answer delimited by the end of the stream ends only when the connection does.
            let _ = client.stream.shutdown().await;
            return;
        }
    }
}

/// The head to forward when a listing's `maxresults` must change, re-signed when it was
/// SharedKey-signed; `None` to forward the request as it came.
pub(super) fn clamp(state: &mut State, request: &Request) -> Option<Vec<u8>> {
    let page_size = state.config.page_size?.max(1);
    let (path, query) = request.target.split_once('?')?;
    let pieces: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    let name_of = |piece: &str| {
        let name = piece.split('=').next().unwrap_or("");
        percent_encoding::percent_decode_str(name)
            .decode_utf8_lossy()
            .to_ascii_lowercase()
    };
    let is_listing = pieces.iter().any(|p| {
        name_of(p) == "comp"
            && p.split_once('=')
                .is_some_and(|(_, v)| v.eq_ignore_ascii_case("list"))
    });
    if !is_listing {
        return None;
    }
    let asked = pieces
        .iter()
        .find(|p| name_of(p) == "maxresults")
        .and_then(|p| p.split_once('=')?.1.parse::<u32>().ok());
    if asked.is_some_and(|asked| asked <= page_size) {
        return None;
    }
    let mut new_pieces: Vec<String> = pieces
        .iter()
        .filter(|p| name_of(p) != "maxresults")
        .map(|p| (*p).to_owned())
        .collect();
    new_pieces.push(format!("maxresults={page_size}"));
    let target = format!("{path}?{}", new_pieces.join("&"));
    let version = request.head.first.rsplit(' ').next().unwrap_or("HTTP/1.1");
    let first = format!("{} {target} {version}", request.method);

    let authorization = request.head.header("authorization").unwrap_or("");
    let Some(signed_by) = authorization.strip_prefix("SharedKey ") else {
        // SAS or bearer: their signatures do not cover maxresults.
        state.stats.listings_clamped += 1;
        return Some(request.head.rebuild(&first, &[]));
    };
    let account = signed_by.split(':').next().unwrap_or("");
    let (Some(key), Ok(url)) = (
        state.keys.get(account),
        url::Url::parse(&format!("http://proxy{target}")),
    ) else {
        state.stats.listings_not_clamped += 1;
        return None;
    };
    let headers = request
        .head
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()));
    let signature = lakebackup::storage::shared_key::authorization(
        account,
        key,
        &request.method,
        &url,
        headers,
    );
    state.stats.listings_clamped += 1;
    state.stats.re_signed += 1;
    Some(
        request
            .head
            .rebuild(&first, &[("authorization", signature.as_str())]),
    )
}

/// A SAS signature is a credential even in a test's log.
pub(super) fn redact_sas(target: &str) -> String {
    let Some((path, query)) = target.split_once('?') else {
        return target.to_owned();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|piece| match piece.split_once('=') {
            Some((name, _)) if name.eq_ignore_ascii_case("sig") => format!("{name}=REDACTED"),
            _ => piece.to_owned(),
        })
        .collect();
    format!("{path}?{}", query.join("&"))
}
