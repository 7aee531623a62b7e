use super::*;
use http_body_util::BodyExt;

/// A real upstream error: a connection refused on a loopback port nobody listens on.
async fn refused() -> crate::upstream::UpstreamError {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let e = tokio::net::TcpStream::connect(&address)
        .await
        .expect_err("nothing listens there");
    crate::upstream::UpstreamError::Connect(address, e)
}

#[tokio::test]
async fn every_variant_has_its_status_and_code() {
    let store = || Arc::new(StoreError::Timeout);
    let corrupt = || Arc::new(StoreError::Corrupt(crate::store::codec::BadRecord("x")));
    let rows: Vec<(GatewayError, u16, &str)> = vec![
        (
            GatewayError::MethodNotAllowed(HeaderValue::from_static("GET")),
            405,
            "method_not_allowed",
        ),
        (GatewayError::InvalidHost, 400, "invalid_host"),
        (GatewayError::InvalidRequestBody, 400, "invalid_body"),
        (GatewayError::UriTooLong, 414, "uri_too_long"),
        (
            GatewayError::BodyTimeout(Duration::from_secs(30)),
            408,
            "request_timeout",
        ),
        (
            GatewayError::Throttled(crate::throttle::Refusal::Client { retry_after: 9 }),
            429,
            "too_many_failed_attempts",
        ),
        (GatewayError::HeadersTooLarge, 431, "headers_too_large"),
        (
            GatewayError::UpgradeNotSupported,
            400,
            "upgrade_not_supported",
        ),
        (InvalidPath.into(), 400, "invalid_path"),
        (GatewayError::RouteNotFound, 404, "route_not_found"),
        (ProjectError::Missing.into(), 400, "missing_project"),
        (ProjectError::Ambiguous.into(), 400, "ambiguous_project"),
        (CredentialError::Missing.into(), 401, "missing_api_key"),
        (
            CredentialError::Conflicting.into(),
            400,
            "conflicting_credentials",
        ),
        (CredentialError::Malformed.into(), 401, "invalid_api_key"),
        (GatewayError::UnknownKey, 401, "invalid_api_key"),
        (KeyRejection::Revoked.into(), 401, "key_revoked"),
        (KeyRejection::Expired.into(), 401, "key_expired"),
        (KeyRejection::Rotated.into(), 401, "key_rotated"),
        (KeyRejection::LegacySunset.into(), 401, "legacy_key_sunset"),
        (KeyRejection::OwnerDisabled.into(), 401, "user_disabled"),
        (Denial::OrgMismatch.into(), 403, "org_mismatch"),
        (Denial::GuestNotAllowed.into(), 403, "guest_not_allowed"),
        (Denial::ProjectNotFound.into(), 404, "project_not_found"),
        (
            Denial::ProjectAccessDenied.into(),
            403,
            "project_access_denied",
        ),
        (
            Denial::KeyProjectMismatch.into(),
            403,
            "key_project_mismatch",
        ),
        (Denial::InsufficientScope.into(), 403, "insufficient_scope"),
        (Denial::ProjectArchived.into(), 403, "project_archived"),
        (GatewayError::PayloadTooLarge, 413, "payload_too_large"),
        (store().into(), 503, "key_store_unavailable"),
        (corrupt().into(), 500, "internal_error"),
        (
            GatewayError::UpstreamUnavailable(refused().await),
            502,
            "upstream_unavailable",
        ),
        (
            GatewayError::UpstreamTimeout(Duration::from_secs(1)),
            504,
            "upstream_timeout",
        ),
    ];
    for (err, status, code) in rows {
        let res = err.to_response(ErrorStyle::Keygate);
        assert_eq!(res.status().as_u16(), status, "{err:?}");
        assert_eq!(err.code(), code);
        assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(
            res.headers().contains_key(header::RETRY_AFTER),
            status == 503 || status == 429,
            "{code}"
        );
        let challenge = res.headers().get(header::WWW_AUTHENTICATE);
        let want = match code {
            _ if status != 401 => None,
            "missing_api_key" => Some(r#"Bearer realm="keygate""#),
            _ => Some(r#"Bearer realm="keygate", error="invalid_token""#),
        };
        assert_eq!(challenge.map(|v| v.to_str().unwrap()), want, "{code}");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], code);
        assert!(!v["message"].as_str().unwrap().is_empty());
        assert_eq!(v["message"], v["error"]["message"]);
    }
}

#[tokio::test]
async fn error_bodies_escape_what_json_must() {
    let message = "a \"quoted\" name, a \\ and a\nnewline";
    let res = json_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "invalid_field");
    assert_eq!(v["error"]["message"], message);
    assert_eq!(v["message"], message);
}

#[tokio::test]
async fn each_error_body_is_made_once_and_kept_apart() {
    let body = |e: GatewayError| async move {
        e.to_response(ErrorStyle::Keygate)
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
    };
    let unknown = body(GatewayError::UnknownKey).await;
    assert_eq!(unknown, body(GatewayError::UnknownKey).await);
    assert_eq!(unknown, body(CredentialError::Malformed.into()).await);
    let missing = body(CredentialError::Missing.into()).await;
    assert_ne!(unknown, missing);
    let v: serde_json::Value = serde_json::from_slice(&missing).unwrap();
    assert_eq!(v["error"]["code"], "missing_api_key");
}

/// Every style keeps the status and the challenge, and says the condition in its own terms.
#[tokio::test]
async fn other_apis_error_styles_carry_the_same_status_and_their_own_codes() {
    let read = |res: Response<Full<Bytes>>| async move {
        let status = res.status().as_u16();
        let challenge = res.headers().get(header::WWW_AUTHENTICATE).cloned();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        (status, challenge, v)
    };
    for (err, status, clarifai) in [
        (GatewayError::from(CredentialError::Missing), 401, 11009),
        (GatewayError::UnknownKey, 401, 11008),
        (KeyRejection::Revoked.into(), 401, 11008),
        (Denial::InsufficientScope.into(), 403, 11007),
        (GatewayError::RouteNotFound, 404, 11101),
        (GatewayError::PayloadTooLarge, 413, 11102),
        (
            GatewayError::KeyStoreUnavailable(Arc::new(StoreError::Timeout)),
            503,
            98004,
        ),
    ] {
        let code = err.code();
        let (s, challenge, _) = read(err.to_response(ErrorStyle::Keygate)).await;
        let (cs, cchallenge, c) = read(err.to_response(ErrorStyle::Clarifai)).await;
        let (gs, gchallenge, g) = read(err.to_response(ErrorStyle::Graphql)).await;
        assert_eq!((s, cs, gs), (status, status, status), "{code}");
        assert_eq!(
            (&cchallenge, &gchallenge),
            (&challenge, &challenge),
            "{code}"
        );
        assert_eq!(c["status"]["code"], clarifai, "{code}");
        assert!(
            c["status"]["details"].as_str().unwrap().contains(code),
            "{code}"
        );
        assert_eq!(g["errors"][0]["extensions"]["code"], code);
        assert!(
            g["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
}
