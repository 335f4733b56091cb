//! List Blobs with `include=permissions` on a lake: forwarded without it (Azurite knows no
//! permissions; the request re-signed when SharedKey signed its query), and each entry's
//! `Properties` given `Owner`, `Group`, `Permissions`, `Acl` and `ResourceType`.

use std::io;

use super::{
    super::{
        refusals::{azure_error, with_header},
        serve::forward,
        wire::{Answer, Request},
        Shared,
    },
    own, HnsLake, PathKey,
};

/// The first service version that lists permissions.
const PERMISSIONS_VERSION: &str = "2020-06-12";

pub(super) async fn list_with_permissions(
    shared: &Shared,
    lake: &HnsLake,
    request: &Request,
    head: &[u8],
    key: &PathKey,
) -> io::Result<Answer> {
    let version = request.head.header("x-ms-version").unwrap_or("");
    if version < PERMISSIONS_VERSION {
        let refusal = azure_error(
            "400 Value for one of the query parameters specified in the request URI is invalid.",
            "InvalidQueryParameterValue",
            "include=permissions needs service version 2020-06-12 or later.",
            request,
            &[],
        );
        return Ok(own(refusal, request));
    }
    lake.count(|c| c.listings_with_permissions += 1);
    let without = without_permissions(shared, request, head);
    let mut answer = forward(shared, request, &without).await?;
    if !answer.head.starts_with(b"HTTP/1.1 200") {
        return Ok(answer);
    }
    let chunked = String::from_utf8_lossy(&answer.head)
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(&answer.body)
    } else {
        std::mem::take(&mut answer.body)
    };
    let text = String::from_utf8_lossy(&body).into_owned();
    let rewritten = with_permissions(&text, |name| {
        let path = PathKey::new(&key.account, &key.container, name);
        let directory = lake.lake().paths.get(&path).is_some_and(|a| a.directory);
        let access = lake.access_or_new(&path, directory);
        let resource = if access.directory {
            "directory"
        } else {
            "file"
        };
        format!(
            "<Owner>{}</Owner><Group>{}</Group><Permissions>{}</Permissions><Acl>{}</Acl><ResourceType>{resource}</ResourceType>",
            escape(&access.owner),
            escape(&access.group),
            escape(&access.permissions()),
            escape(&access.acl())
        )
    });
    let mut new_head = without_header(&answer.head, "transfer-encoding");
    new_head = with_header(&new_head, "Content-Length", &rewritten.len().to_string());
    answer.head = new_head;
    answer.body = rewritten.into_bytes();
    Ok(answer)
}

/// The request's head with `permissions` taken out of `include` (re-signed when SharedKey
/// signed it).
fn without_permissions(shared: &Shared, request: &Request, head: &[u8]) -> Vec<u8> {
    let Some((path, query)) = request.target.split_once('?') else {
        return head.to_vec();
    };
    let pieces: Vec<String> = query
        .split('&')
        .filter_map(|piece| {
            let (name, value) = piece.split_once('=').unwrap_or((piece, ""));
            if !name.eq_ignore_ascii_case("include") {
                return Some(piece.to_owned());
            }
            let value = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
            let kept: Vec<&str> = value
                .split(',')
                .filter(|i| !i.trim().eq_ignore_ascii_case("permissions"))
                .collect();
            (!kept.is_empty()).then(|| format!("{name}={}", kept.join("%2C")))
        })
        .collect();
    let target = format!("{path}?{}", pieces.join("&"));
    let version = request.head.first.rsplit(' ').next().unwrap_or("HTTP/1.1");
    let first = format!("{} {target} {version}", request.method);
    let authorization = request.head.header("authorization").unwrap_or("");
    let Some(signed_by) = authorization.strip_prefix("SharedKey ") else {
        return request.head.rebuild(&first, &[]);
    };
    let account = signed_by.split(':').next().unwrap_or("");
    let secret = shared.state().keys.get(account).cloned();
    let (Some(secret), Ok(url)) = (secret, url::Url::parse(&format!("http://proxy{target}")))
    else {
        return request.head.rebuild(&first, &[]);
    };
    let signature = lakebackup::storage::shared_key::authorization(
        account,
        &secret,
        &request.method,
        &url,
        request
            .head
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str())),
    );
    request
        .head
        .rebuild(&first, &[("authorization", signature.as_str())])
}

/// `text` (a List Blobs body) with `extra(name)` added to the `Properties` of each blob entry
/// that is no snapshot.
fn with_permissions(text: &str, mut extra: impl FnMut(&str) -> String) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    let mut rest = text;
    while let Some(start) = rest.find("<Blob>") {
        let Some(end) = rest[start..]
            .find("</Blob>")
            .map(|e| start + e + "</Blob>".len())
        else {
            break;
        };
        out.push_str(&rest[..start]);
        let entry = &rest[start..end];
        let name = entry
            .find("<Name")
            .and_then(|at| {
                let open = at + entry[at..].find('>')? + 1;
                let close = open + entry[open..].find("</Name>")?;
                Some(unescape(&entry[open..close]))
            })
            .unwrap_or_default();
        match entry.find("</Properties>") {
            Some(at) if !entry.contains("<Snapshot>") => {
                out.push_str(&entry[..at]);
                out.push_str(&extra(&name));
                out.push_str(&entry[at..]);
            }
            _ => out.push_str(entry),
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let Some(end) = rest[at..].find(';') else {
            out.push_str(&rest[at..]);
            return out;
        };
        let entity = &rest[at + 1..at + end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => out.push(c),
            None => out.push_str(&rest[at..at + end + 1]),
        }
        rest = &rest[at + end + 1..];
    }
    out.push_str(rest);
    out
}

/// A chunked body's data.
fn dechunk(raw: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    let mut at = 0;
    while let Some(line_end) = raw[at..].windows(2).position(|w| w == b"\r\n") {
        let line = String::from_utf8_lossy(&raw[at..at + line_end]);
        let size =
            usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        at += line_end + 2;
        if size == 0 || at + size > raw.len() {
            break;
        }
        data.extend_from_slice(&raw[at..at + size]);
        at += size + 2;
    }
    data
}

/// `head` without any `name` header.
fn without_header(head: &[u8], name: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let end = text.find("\r\n\r\n").unwrap_or(text.len());
    let lines: Vec<&str> = text[..end]
        .split("\r\n")
        .filter(|line| {
            !line
                .split_once(':')
                .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        })
        .collect();
    format!("{}\r\n\r\n", lines.join("\r\n")).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_go_into_each_blob_entrys_properties_but_not_a_snapshots() {
        let body = "<EnumerationResults><Blobs><Blob><Name>a&amp;b/&#x1F600;</Name><Properties><Etag>1</Etag></Properties></Blob>\
                    <Blob><Name>c</Name><Snapshot>t</Snapshot><Properties></Properties></Blob></Blobs></EnumerationResults>";
        let mut seen = Vec::new();
        let out = with_permissions(body, |name| {
            seen.push(name.to_owned());
            "<Owner>o</Owner>".to_owned()
        });
        assert_eq!(seen, ["a&b/\u{1F600}"]);
        assert!(
            out.contains("<Etag>1</Etag><Owner>o</Owner></Properties>"),
            "{out}"
        );
        assert!(
            out.contains("<Snapshot>t</Snapshot><Properties></Properties>"),
            "{out}"
        );
    }
}
