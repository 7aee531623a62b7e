//! The API Keys page, in a real headless Chromium: sign in, create a key and read it once, use
//! it on the data plane, rename it, change its scopes, revoke, activate, rotate and delete it,
//! with the page's security headers and no secret left behind.

use std::time::{Duration, Instant};

use crate::harness::*;
use keygate::model::*;
use serde_json::Value;

/// With `KEYGATE_SCREENSHOTS=DIR`, saves a PNG of the page as `DIR/NAME.png` (how the pictures
/// in docs/console/ are made: `KEYGATE_SCREENSHOTS=docs/console cargo test --test integration
/// console`).
async fn screenshot(browser: &Browser, name: &str) {
    if let Ok(dir) = std::env::var("KEYGATE_SCREENSHOTS") {
        std::fs::write(format!("{dir}/{name}.png"), browser.screenshot().await).unwrap();
    }
}

/// Signs in on the page with `key`.
async fn sign_in(browser: &Browser, key: &str) {
    browser
        .type_into(&browser.find("#sign-in-key").await, key)
        .await;
    browser
        .click(&browser.find("#sign-in-form button[type=submit]").await)
        .await;
}

/// Picks the org `value` in the header's list.
async fn pick_org(browser: &Browser, value: &str) {
    let script = format!(
        "const s = document.getElementById('org-select'); s.value = {value:?}; s.dispatchEvent(new Event('change'));"
    );
    browser.run(&script).await;
}

/// The row of the key named `name`, and a button in it.
fn button_of(name: &str, label: &str) -> String {
    format!("//tr[td[1][text()='{name}']]//button[text()='{label}']")
}

/// Answers to the data plane with `key`, until it is `want` (at most 1 s); how long it took.
async fn until(addr: std::net::SocketAddr, key: &str, want: &str) -> Duration {
    let started = Instant::now();
    answers(addr, "/v1/projects/p1/x", key, want).await;
    started.elapsed()
}

#[tokio::test]
async fn the_api_keys_page_manages_a_key_in_a_real_browser() {
    let w = World::start().await;
    let (admin, gw) = (w.gw.admin, w.gw.addr);
    // The page's headers: only its own files and this origin's API, no frames, no caching.
    let (status, headers, body) = get(admin, "/console").await;
    assert_eq!(status, 200);
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["cache-control"], "no-store");
    let page = String::from_utf8_lossy(&body);
    assert!(
        !page.contains("style=") && !page.contains("<script>"),
        "nothing inline"
    );
    for asset in ["/console", "/console/console.js", "/console/console.css"] {
        let (_, _, body) = get(admin, asset).await;
        let text = String::from_utf8_lossy(&body);
        assert!(
            !text.contains("http://") && !text.contains("https://"),
            "{asset}: another host"
        );
    }

    let (manager, _) = new_key(&w.store, &w.gw.config, "alice", &["keys:manage"], &[]).await;
    let browser = Browser::start(1280, 800).await;
    browser.goto(&format!("http://{admin}/console")).await;
    let field = browser.find("#sign-in-key").await;
    screenshot(&browser, "sign-in").await;
    browser.type_into(&field, &manager).await;
    browser
        .click(&browser.find("#sign-in-form button[type=submit]").await)
        .await;
    browser
        .wait_for("!document.getElementById('keys').hidden")
        .await;
    // Alice's keys: the two every world has, and the one signed in with.
    browser
        .wait_for("document.querySelectorAll('#keys-body tr').length === 3")
        .await;

    screenshot(&browser, "keys").await;

    // Create a key; its secret is shown once.
    browser.click(&browser.find("#new-key").await).await;
    browser
        .type_into(&browser.find("#create-name").await, "e2e")
        .await;
    screenshot(&browser, "new-key").await;
    browser.click(&browser.find("#create-submit").await).await;
    browser
        .wait_for("document.getElementById('secret-dialog').open")
        .await;
    let secret = browser
        .run("return document.getElementById('secret-value').value;")
        .await;
    let secret = secret.as_str().unwrap().to_owned();
    assert!(secret.starts_with("kg_"), "{secret}");
    if std::env::var("KEYGATE_SCREENSHOTS").is_ok() {
        // No real-looking secret in the pictures (secret scanners know the format).
        let example =
            "document.getElementById('secret-value').value = 'kg_EXAMPLE-shown-here-once';";
        browser.run(example).await;
        screenshot(&browser, "shown-once").await;
    }
    assert_eq!(answer(gw, "/v1/projects/p1/x", &secret).await, "ok");
    // Closed, the dialog leaves the secret nowhere in the page or the tab's storage.
    browser.click(&browser.find("#secret-done").await).await;
    browser
        .wait_for("!document.getElementById('secret-dialog').open")
        .await;
    let leftover = browser
        .run(&format!(
            "return document.documentElement.outerHTML.includes({secret:?}) \
             || document.getElementById('secret-value').value !== '' \
             || JSON.stringify(sessionStorage).includes({secret:?});"
        ))
        .await;
    assert_eq!(
        leftover,
        Value::Bool(false),
        "the secret stayed in the page"
    );

    // Rename it, then give it `models:read` only: the data plane follows.
    browser
        .click(&browser.find_xpath(&button_of("e2e", "Rename")).await)
        .await;
    let name = browser.find("#edit-name").await;
    browser
        .run("document.getElementById('edit-name').value = '';")
        .await;
    browser.type_into(&name, "e2e renamed").await;
    browser.click(&browser.find("#edit-submit").await).await;
    browser
        .find_xpath(&button_of("e2e renamed", "Scopes"))
        .await;
    browser
        .click(
            &browser
                .find_xpath(&button_of("e2e renamed", "Scopes"))
                .await,
        )
        .await;
    browser
        .click(&browser.find("#edit-fields input[value=predict]").await)
        .await;
    browser
        .click(
            &browser
                .find("#edit-fields input[value='models:read']")
                .await,
        )
        .await;
    browser.click(&browser.find("#edit-submit").await).await;
    until(gw, &secret, "insufficient_scope").await;
    assert_eq!(answer(gw, "/v1/models/m", &secret).await, "ok");

    // Revoke it: the data plane refuses it at once; activate it again.
    browser
        .click(
            &browser
                .find_xpath(&button_of("e2e renamed", "Revoke"))
                .await,
        )
        .await;
    let refused = until(gw, &secret, "key_revoked").await;
    assert!(refused < Duration::from_millis(100), "{refused:?}");
    browser
        .click(
            &browser
                .find_xpath(&button_of("e2e renamed", "Activate"))
                .await,
        )
        .await;
    browser
        .find_xpath(&button_of("e2e renamed", "Rotate"))
        .await;
    assert_eq!(answer(gw, "/v1/models/m", &secret).await, "ok");

    // Rotate with a grace period: both secrets work, and the new one is shown once.
    browser
        .click(
            &browser
                .find_xpath(&button_of("e2e renamed", "Rotate"))
                .await,
        )
        .await;
    browser.find("#edit-grace").await;
    browser
        .run("document.getElementById('edit-grace').value = '1h';")
        .await;
    browser.click(&browser.find("#edit-submit").await).await;
    browser
        .wait_for("document.getElementById('secret-dialog').open && document.getElementById('secret-value').value !== ''")
        .await;
    let rotated = browser
        .run("return document.getElementById('secret-value').value;")
        .await;
    let rotated = rotated.as_str().unwrap().to_owned();
    assert_ne!(rotated, secret);
    browser.click(&browser.find("#secret-done").await).await;
    assert_eq!(answer(gw, "/v1/models/m", &secret).await, "ok", "in grace");
    assert_eq!(answer(gw, "/v1/models/m", &rotated).await, "ok");
    // Rotated again, the old secrets stopping at once: only the newest works.
    browser
        .click(
            &browser
                .find_xpath(&button_of("e2e renamed", "Rotate"))
                .await,
        )
        .await;
    browser.find("#edit-grace").await;
    browser.click(&browser.find("#edit-submit").await).await;
    browser
        .wait_for("document.getElementById('secret-dialog').open && document.getElementById('secret-value').value !== ''")
        .await;
    let newest = browser
        .run("return document.getElementById('secret-value').value;")
        .await;
    let newest = newest.as_str().unwrap().to_owned();
    browser.click(&browser.find("#secret-done").await).await;
    assert_eq!(answer(gw, "/v1/models/m", &newest).await, "ok");
    // The previous secret is refused as rotated; the one before it is no longer a key at all.
    answers(gw, "/v1/models/m", &rotated, "key_rotated").await;
    assert_eq!(answer(gw, "/v1/models/m", &secret).await, "invalid_api_key");

    // Delete is offered only once revoked, and names the key.
    browser
        .click(
            &browser
                .find_xpath(&button_of("e2e renamed", "Revoke"))
                .await,
        )
        .await;
    browser
        .click(
            &browser
                .find_xpath(&button_of("e2e renamed", "Delete"))
                .await,
        )
        .await;
    let warning = browser
        .run("return document.querySelector('#edit-fields .warning').textContent;")
        .await;
    assert!(
        warning.as_str().unwrap().contains("e2e renamed"),
        "{warning}"
    );
    browser.click(&browser.find("#edit-submit").await).await;
    browser
        .wait_for("document.querySelectorAll('#keys-body tr').length === 3")
        .await;
    let gone = w
        .store
        .keys(&OrgId::from("acme"), Some(&UserId::from("alice")))
        .await
        .unwrap();
    assert!(gone.iter().all(|k| k.name != "e2e renamed"));

    // At phone width the page still reads: its table scrolls within its box.
    let phone = Browser::start(360, 740).await;
    phone.goto(&format!("http://{admin}/console")).await;
    phone.find("#sign-in-key").await;
    screenshot(&phone, "sign-in-phone").await;
    sign_in(&phone, &manager).await;
    phone
        .wait_for("document.querySelectorAll('#keys-body tr').length === 3")
        .await;
    let overflow = phone
        .run("return document.documentElement.scrollWidth > window.innerWidth;")
        .await;
    assert_eq!(
        overflow,
        Value::Bool(false),
        "the page is wider than the phone"
    );
    screenshot(&phone, "keys-phone").await;

    // Signing out forgets the key.
    browser.click(&browser.find("#sign-out").await).await;
    let stored = browser.run("return sessionStorage.length;").await;
    assert_eq!(stored, Value::from(0));
}

#[tokio::test]
async fn an_admin_manages_members_projects_and_reads_the_audit_log_in_the_browser() {
    let w = World::start().await;
    let (admin, gw) = (w.gw.admin, w.gw.addr);
    let browser = Browser::start(1280, 800).await;
    // A member sees only their own keys, and no admin page.
    let (manager, _) = new_key(&w.store, &w.gw.config, "alice", &["keys:manage"], &[]).await;
    browser.goto(&format!("http://{admin}/console")).await;
    sign_in(&browser, &manager).await;
    browser
        .wait_for("document.querySelectorAll('#keys-body tr').length === 3")
        .await;
    let owners = browser
        .run("return [...document.querySelectorAll('#keys-body tr')].map(r => r.cells[2].textContent);")
        .await;
    assert_eq!(owners, serde_json::json!(["alice", "alice", "alice"]));
    let pages = browser
        .run("return [...document.querySelectorAll('[data-admin]')].every(b => b.hidden);")
        .await;
    assert_eq!(pages, Value::Bool(true));
    browser.click(&browser.find("#sign-out").await).await;

    // An admin: every key of the org, and the members, projects and audit pages.
    sign_in(&browser, &w.keys.ada).await;
    browser
        .wait_for("document.getElementById('keys-title').textContent === 'Keys of the org'")
        .await;
    screenshot(&browser, "org-keys").await;

    // Disable a member: their keys stop on the data plane; enable them again.
    browser
        .click(&browser.find("[data-tab=members]").await)
        .await;
    let disable = "//tr[td[1][text()='bob']]//button[text()='Disable']";
    browser.click(&browser.find_xpath(disable).await).await;
    answers(gw, "/v1/projects/p2/x", &w.keys.bob, "user_disabled").await;
    screenshot(&browser, "members").await;
    let enable = "//tr[td[1][text()='bob']]//button[text()='Enable']";
    browser.click(&browser.find_xpath(enable).await).await;
    answers(gw, "/v1/projects/p2/x", &w.keys.bob, "ok").await;

    // Archive a project: its requests are refused; restore it.
    browser
        .click(&browser.find("[data-tab=projects]").await)
        .await;
    let archive = "//tr[td[1][text()='pub']]//button[text()='Archive']";
    browser.click(&browser.find_xpath(archive).await).await;
    answers(gw, "/v1/projects/pub/x", &w.keys.bob, "project_archived").await;
    screenshot(&browser, "projects").await;
    let restore = "//tr[td[1][text()='pub']]//button[text()='Restore']";
    browser.click(&browser.find_xpath(restore).await).await;
    answers(gw, "/v1/projects/pub/x", &w.keys.bob, "ok").await;

    // The audit log has all of it, and its filters narrow it.
    browser.click(&browser.find("[data-tab=audit]").await).await;
    browser
        .wait_for("document.querySelectorAll('#audit-body tr').length > 5")
        .await;
    browser
        .type_into(&browser.find("#audit-action").await, "project.")
        .await;
    browser
        .wait_for("[...document.querySelectorAll('#audit-body tr')].every(r => r.cells[2].textContent.startsWith('project.'))")
        .await;
    let actions = browser
        .run("return [...document.querySelectorAll('#audit-body tr')].map(r => r.cells[1].textContent + ' ' + r.cells[2].textContent);")
        .await;
    let actions: Vec<String> = serde_json::from_value(actions).unwrap();
    for want in ["user:ada project.archive", "user:ada project.restore"] {
        assert!(actions.iter().any(|a| a == want), "{want} in {actions:?}");
    }
    browser
        .run("const f = document.getElementById('audit-action'); f.value = 'user.update'; f.dispatchEvent(new Event('input', {bubbles: true}));")
        .await;
    browser
        .wait_for("document.querySelectorAll('#audit-body tr').length === 2")
        .await;
    screenshot(&browser, "audit").await;

    // The admin pages at phone width.
    if std::env::var("KEYGATE_SCREENSHOTS").is_ok() {
        let phone = Browser::start(360, 740).await;
        phone.goto(&format!("http://{admin}/console")).await;
        sign_in(&phone, &w.keys.ada).await;
        phone
            .wait_for("document.getElementById('keys-title').textContent === 'Keys of the org'")
            .await;
        for tab in ["members", "projects", "audit", "legacy"] {
            phone
                .click(&phone.find(&format!("[data-tab={tab}]")).await)
                .await;
            // Rows, or the page's empty state.
            phone
                .wait_for(&format!(
                    "document.querySelectorAll('#{tab} tbody tr').length > 0 \
                     || document.querySelector('#{tab} .empty:not([hidden])') !== null"
                ))
                .await;
            screenshot(&phone, &format!("{tab}-phone")).await;
        }
    }
}

#[tokio::test]
async fn the_platform_picks_an_org_and_an_admin_sees_legacy_pairs_and_the_sunset() {
    let w = World::start().await;
    let admin = w.gw.admin;
    let legacy = keygate::store::keys::NewKey {
        org_id: None,
        user_id: UserId::from("bob"),
        name: "old sdk".into(),
        scopes: vec![Scope::new("predict")],
        project_ids: vec![],
        expires_at: None,
    };
    w.store
        .import_legacy("AKIA-OLD", "an-old-secret", legacy)
        .await
        .unwrap();
    let browser = Browser::start(1280, 800).await;
    browser.goto(&format!("http://{admin}/console")).await;
    sign_in(&browser, BOOTSTRAP).await;
    // The bootstrap token acts for the platform: it picks the org in the header.
    browser
        .wait_for("!document.getElementById('org-pick').hidden")
        .await;
    let orgs = browser
        .run("return [...document.querySelectorAll('#org-select option')].map(o => o.value);")
        .await;
    assert_eq!(orgs, serde_json::json!(["acme", "globex"]));
    browser
        .wait_for("[...document.querySelectorAll('#keys-body tr')].some(r => r.cells[2].textContent === 'bob')")
        .await;
    pick_org(&browser, "globex").await;
    browser
        .wait_for("[...document.querySelectorAll('#keys-body tr')].every(r => r.cells[2].textContent === 'gina')")
        .await;
    // The new-key dialog offers only validities within keys.max_validity, and the presets.
    browser.click(&browser.find("#new-key").await).await;
    let offered = browser
        .run("return [[...document.querySelectorAll('#create-validity option')].map(o => o.value), [...document.querySelectorAll('#create-presets input')].map(i => i.value)];")
        .await;
    assert_eq!(
        offered,
        serde_json::json!([["1d", "7d", "30d", "90d"], ["all", "inference", "project"]])
    );
    browser
        .run("document.getElementById('create-dialog').close();")
        .await;
    // Back to acme: its legacy pairs, and what the deployment says of their end.
    pick_org(&browser, "acme").await;
    browser
        .wait_for("[...document.querySelectorAll('#keys-body tr')].some(r => r.cells[2].textContent === 'bob')")
        .await;
    browser
        .click(&browser.find("[data-tab=legacy]").await)
        .await;
    browser
        .wait_for("document.querySelectorAll('#legacy-body tr').length === 1")
        .await;
    let row = browser
        .run("return [...document.querySelector('#legacy-body tr').cells].map(c => c.textContent);")
        .await;
    assert_eq!(row[1], "AKIA-OLD", "{row}");
    let sunset = browser
        .run("return document.getElementById('legacy-sunset').textContent;")
        .await;
    assert!(
        sunset.as_str().unwrap().contains("No sunset is set"),
        "{sunset}"
    );
    screenshot(&browser, "legacy").await;
}

#[tokio::test]
async fn a_person_in_two_orgs_switches_between_them_in_the_header() {
    let w = World::start().await;
    let (acme, globex) = (OrgId::from("acme"), OrgId::from("globex"));
    let pat = UserId::from("pat");
    w.store
        .create_user(&acme, Some(pat.clone()), "Pat", Role::Member)
        .await
        .unwrap();
    w.store
        .add_member(&globex, &pat, Role::Admin)
        .await
        .unwrap();
    // A management key in acme (a member there), an admin's in globex.
    let key_in = |org: &OrgId, scope: &str| keygate::store::keys::NewKey {
        org_id: Some(org.clone()),
        user_id: pat.clone(),
        name: format!("pat@{org}"),
        scopes: vec![Scope::new(scope)],
        project_ids: vec![],
        expires_at: Some(unix_now() + 3600),
    };
    let in_acme = w
        .store
        .create_key(&w.gw.config.keys, key_in(&acme, "keys:manage"))
        .await
        .unwrap();
    let in_globex = w
        .store
        .create_key(&w.gw.config.keys, key_in(&globex, "*"))
        .await
        .unwrap();

    let browser = Browser::start(1280, 800).await;
    browser
        .goto(&format!("http://{}/console", w.gw.admin))
        .await;
    sign_in(&browser, &in_acme.secret).await;
    browser
        .wait_for("document.getElementById('keys-title').textContent === 'My keys'")
        .await;
    browser.click(&browser.find("#add-org").await).await;
    sign_in(&browser, &in_globex.secret).await;
    // In globex pat is an admin: the org's keys (gina's too) and the admin pages.
    browser
        .wait_for("document.getElementById('keys-title').textContent === 'Keys of the org'")
        .await;
    browser
        .wait_for("[...document.querySelectorAll('#keys-body tr')].some(r => r.cells[2].textContent === 'gina')")
        .await;
    let orgs = browser
        .run("return [...document.querySelectorAll('#org-select option')].map(o => o.textContent);")
        .await;
    assert_eq!(orgs, serde_json::json!(["Acme", "Globex"]));
    // Back to acme, where pat is a member: only pat's own key there.
    pick_org(&browser, "0").await;
    browser
        .wait_for("document.getElementById('keys-title').textContent === 'My keys'")
        .await;
    browser
        .wait_for("[...document.querySelectorAll('#keys-body tr')].map(r => r.cells[0].textContent).join() === 'pat@acme'")
        .await;
    let admin_pages = browser
        .run("return [...document.querySelectorAll('[data-admin]')].every(b => b.hidden);")
        .await;
    assert_eq!(admin_pages, Value::Bool(true));
    browser.click(&browser.find("#sign-out").await).await;
    assert_eq!(
        browser.run("return sessionStorage.length;").await,
        Value::from(0)
    );
}
