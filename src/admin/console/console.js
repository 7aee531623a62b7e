// keygate's API Keys page. It speaks only the management API (/v1, same origin); the key it
// signs in with is kept in sessionStorage, sent as `Authorization: Bearer`, never in a URL or a
// cookie. No framework, no build step; the page's Content-Security-Policy allows this file and
// console.css, and nothing inline.
"use strict";

// sessionStorage: the keys signed in with, one per org, and which one acts now:
// {"keys": [{"org": "acme", "name": "Acme", "key": "kg_…"}], "current": 0}.
const STORE = "keygate.console";
const $ = (id) => document.getElementById(id);

// The scopes a key can be given here, each with what it allows (a preset like `inference` is
// stored as the scopes it stands for, so the page offers those).
const SCOPES = [
  ["predict", "call the models (the inference preset)"],
  ["models:read", "read models"],
  ["models:*", "read and change models"],
  ["datasets:*", "read and change datasets"],
  ["projects:*", "read and change projects"],
  ["keys:manage", "manage your own keys (this page)"],
  ["*", "everything your role allows"],
];

function session() {
  try {
    return JSON.parse(sessionStorage.getItem(STORE)) || { keys: [], current: 0 };
  } catch {
    return { keys: [], current: 0 };
  }
}

// A key being tried at sign-in, before it joins the session.
let trying = null;

function currentKey() {
  if (trying) return trying;
  const s = session();
  return s.keys[s.current] ? s.keys[s.current].key : "";
}

let keys = [];
let admin = false;
let audit = [];
// What keys may be given here (GET /v1/settings).
let settings = { presets: {}, max_validity_secs: 0, allow_no_expiry: false, legacy_sunset: null };
// Signed in with the platform's bootstrap token: every call names the org picked in the header.
let platformOrg = null;

// How long a new key may be valid, each offered when the deployment allows it.
const VALIDITIES = [["1d", 86400, "1 day"], ["7d", 604800, "7 days"], ["30d", 2592000, "30 days"], ["90d", 7776000, "90 days"], ["180d", 15552000, "180 days"]];

async function call(method, path, body) {
  if (platformOrg !== null) {
    path += (path.includes("?") ? "&" : "?") + "org_id=" + encodeURIComponent(platformOrg);
  }
  const headers = { authorization: "Bearer " + currentKey() };
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
    credentials: "omit",
  });
  const text = await res.text();
  const value = text ? JSON.parse(text) : null;
  if (!res.ok) {
    const message = (value && value.message) || res.statusText;
    const error = new Error(message);
    error.status = res.status;
    throw error;
  }
  return value;
}

function when(seconds) {
  if (!seconds) return "never";
  return new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 16) + " UTC";
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.appendChild(td);
  return td;
}

function button(label, onClick, kind) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  if (kind) b.className = kind;
  b.addEventListener("click", onClick);
  return b;
}

function render() {
  const body = $("keys-body");
  body.replaceChildren();
  for (const key of keys) {
    const row = document.createElement("tr");
    row.dataset.id = key.id;
    cell(row, key.name);
    cell(row, key.display);
    cell(row, key.user_id);
    cell(row, key.scopes.join(", "));
    cell(row, key.project_ids.length ? key.project_ids.join(", ") : "any");
    cell(row, key.status);
    cell(row, when(key.created_at));
    cell(row, when(key.expires_at));
    cell(row, key.last_used_at ? when(key.last_used_at) : "not yet");
    cell(row, String(key.request_count));
    const actions = cell(row, "");
    actions.className = "actions-cell";
    actions.append(
      button("Rename", () => rename(key), "plain"),
      button("Scopes", () => editScopes(key), "plain"),
    );
    if (key.status === "revoked") {
      actions.append(
        button("Activate", () => act(key, "activate")),
        button("Delete", () => remove(key), "danger"),
      );
    } else {
      actions.append(button("Rotate", () => rotate(key), "plain"), button("Revoke", () => act(key, "revoke"), "danger"));
    }
    body.appendChild(row);
  }
  $("keys-empty").hidden = keys.length > 0;
}

// An admin's key list can be narrowed to one member's (from the Members page).
let keyOwner = null;

async function load() {
  $("keys-error").textContent = "";
  try {
    const only = keyOwner ? "&user_id=" + encodeURIComponent(keyOwner) : "";
    keys = (await call("GET", "/v1/keys?limit=200" + only)).items;
    render();
  } catch (e) {
    $("keys-error").textContent = e.message;
  }
}

function showSignedIn(signedIn) {
  $("sign-in").hidden = signedIn;
  $("sign-out").hidden = !signedIn;
  if (!signedIn) $("add-org").hidden = true;
  $("who").hidden = !signedIn;
  $("tabs").hidden = !signedIn;
  for (const id of ["keys", "members", "projects", "audit", "legacy"]) $(id).hidden = true;
  if (signedIn) show("keys");
}

// After signing in: the org, whether the key is an admin's (then the admin pages), the keys.
function options(select, pairs, chosen) {
  select.replaceChildren(...pairs.map(([value, text]) => {
    const option = document.createElement("option");
    option.value = value;
    option.textContent = text;
    option.selected = value === chosen;
    return option;
  }));
}

// After signing in or switching org: the org, whether the key is the platform's bootstrap token
// (then the org is picked in the header) or an admin's (then the admin pages), the keys.
async function enter() {
  platformOrg = null;
  const orgs = (await call("GET", "/v1/orgs")).items;
  const platform = await call("GET", "/v1/keys?limit=1").then(() => false, (e) => e.status === 422);
  const s = session();
  if (platform && orgs.length) {
    options($("org-select"), orgs.map((o) => [o.id, o.name]), orgs[0].id);
    platformOrg = orgs[0].id;
  } else {
    // A person in several orgs signs in with a key of each, and switches here.
    options($("org-select"), s.keys.map((k, i) => [String(i), k.name]), String(s.current));
  }
  $("org-pick").hidden = platformOrg === null && s.keys.length < 2;
  $("add-org").hidden = platform;
  $("who").textContent = platform ? "the platform" : s.keys.length < 2 ? orgs.map((o) => o.name).join(", ") : "";
  settings = await call("GET", "/v1/settings");
  admin = await call("GET", "/v1/users?limit=1").then(() => true, () => false);
  for (const b of document.querySelectorAll("[data-admin]")) b.hidden = !admin;
  $("keys-title").textContent = admin ? "Keys of the org" : "My keys";
  showSignedIn(true);
  await load();
}

function show(tab) {
  for (const b of document.querySelectorAll("[data-tab]")) {
    if (b.dataset.tab === tab) b.setAttribute("aria-current", "page");
    else b.removeAttribute("aria-current");
    $(b.dataset.tab).hidden = b.dataset.tab !== tab;
  }
  if (tab === "members") loadMembers();
  if (tab === "projects") loadProjects();
  if (tab === "audit") loadAudit();
  if (tab === "legacy") renderLegacy();
}

function renderLegacy() {
  const sunset = settings.legacy_sunset;
  $("legacy-sunset").textContent = sunset
    ? "Legacy pairs stop working on " + when(sunset) + "; until then every answer to one carries Deprecation and Sunset headers."
    : "No sunset is set (keys.legacy_sunset): legacy pairs keep working, with a Deprecation header.";
  const body = $("legacy-body");
  body.replaceChildren();
  const pairs = keys.filter((k) => k.legacy);
  for (const k of pairs) {
    const row = document.createElement("tr");
    cell(row, k.name);
    cell(row, k.display.replace(/^legacy:/, ""));
    cell(row, k.user_id);
    cell(row, k.status);
    cell(row, when(k.created_at));
    cell(row, k.last_used_at ? when(k.last_used_at) : "not yet");
    body.appendChild(row);
  }
  $("legacy-empty").hidden = pairs.length > 0;
}

async function loadMembers() {
  $("members-error").textContent = "";
  try {
    const members = (await call("GET", "/v1/users?limit=200")).items;
    const body = $("members-body");
    body.replaceChildren();
    for (const m of members) {
      const row = document.createElement("tr");
      cell(row, m.id);
      cell(row, m.name);
      const role = document.createElement("select");
      role.setAttribute("aria-label", "Role of " + m.id);
      for (const r of ["admin", "member", "guest"]) {
        const option = document.createElement("option");
        option.value = option.textContent = r;
        option.selected = r === m.role;
        role.appendChild(option);
      }
      role.addEventListener("change", () => changeMember(m, { role: role.value }));
      cell(row, "").appendChild(role);
      cell(row, m.status);
      const actions = cell(row, "");
      actions.className = "actions-cell";
      actions.append(
        m.status === "active"
          ? button("Disable", () => changeMember(m, { status: "disabled" }), "danger")
          : button("Enable", () => changeMember(m, { status: "active" })),
        button("Keys", () => { keyOwner = m.id; show("keys"); load(); }, "plain"),
      );
      body.appendChild(row);
    }
  } catch (e) {
    $("members-error").textContent = e.message;
  }
}

async function changeMember(member, change) {
  $("members-error").textContent = "";
  try {
    await call("PATCH", "/v1/users/" + member.id, change);
  } catch (e) {
    $("members-error").textContent = e.message;
  }
  await loadMembers();
}

async function loadProjects() {
  $("projects-error").textContent = "";
  try {
    const projects = (await call("GET", "/v1/projects?limit=200")).items;
    const body = $("projects-body");
    body.replaceChildren();
    for (const p of projects) {
      const row = document.createElement("tr");
      cell(row, p.id);
      cell(row, p.visibility);
      cell(row, p.status);
      cell(row, p.members.join(", ") || "none");
      const actions = cell(row, "");
      actions.className = "actions-cell";
      actions.append(
        button("Members", () => projectMembers(p), "plain"),
        p.status === "active"
          ? button("Archive", () => projectAction(p, "POST", "/archive"), "danger")
          : button("Restore", () => projectAction(p, "POST", "/restore")),
      );
      body.appendChild(row);
    }
    $("projects-empty").hidden = projects.length > 0;
  } catch (e) {
    $("projects-error").textContent = e.message;
  }
}

async function projectAction(project, method, suffix) {
  $("projects-error").textContent = "";
  try {
    await call(method, "/v1/projects/" + project.id + suffix);
  } catch (e) {
    $("projects-error").textContent = e.message;
  }
  await loadProjects();
}

function projectMembers(project) {
  edit("Members of " + project.id, (f) => {
    const input = document.createElement("input");
    input.placeholder = "user id";
    field(f, "edit-member", "Add or remove a member", input);
    const select = document.createElement("select");
    for (const [value, text] of [["PUT", "add"], ["DELETE", "remove"]]) {
      const option = document.createElement("option");
      option.value = value;
      option.textContent = text;
      select.appendChild(option);
    }
    field(f, "edit-member-action", "Do", select);
  }, async (f) => {
    const user = f.querySelector("#edit-member").value.trim();
    await call(f.querySelector("#edit-member-action").value, "/v1/projects/" + project.id + "/members/" + user);
    await loadProjects();
  });
}

async function loadAudit() {
  $("audit-error").textContent = "";
  try {
    audit = (await call("GET", "/v1/audit?limit=500")).items;
    renderAudit();
  } catch (e) {
    $("audit-error").textContent = e.message;
  }
}

function renderAudit() {
  const actor = $("audit-actor").value.trim();
  const action = $("audit-action").value.trim();
  const key = $("audit-key").value.trim();
  const since = $("audit-since").value ? Date.parse($("audit-since").value + "Z") / 1000 : 0;
  const body = $("audit-body");
  body.replaceChildren();
  for (const e of audit) {
    if (actor && !e.actor.includes(actor)) continue;
    if (action && !e.action.includes(action)) continue;
    if (key && !(e.target.includes(key) || (e.key_id || "").includes(key))) continue;
    if (e.at < since) continue;
    const row = document.createElement("tr");
    cell(row, when(e.at));
    cell(row, e.actor);
    cell(row, e.action);
    cell(row, e.target);
    cell(row, JSON.stringify(e.details)).className = "details";
    body.appendChild(row);
  }
}

async function signIn(event) {
  event.preventDefault();
  const input = $("sign-in-key");
  trying = input.value.trim();
  input.value = "";
  $("sign-in-error").textContent = "";
  try {
    const org = (await call("GET", "/v1/orgs")).items[0] || { id: "", name: "" };
    const s = session();
    const entry = { org: org.id, name: org.name, key: trying };
    const same = s.keys.findIndex((k) => k.org === org.id);
    if (same >= 0) s.keys[same] = entry;
    else s.keys.push(entry);
    s.current = same >= 0 ? same : s.keys.length - 1;
    sessionStorage.setItem(STORE, JSON.stringify(s));
    trying = null;
    await enter();
    $("new-key").focus();
  } catch (e) {
    trying = null;
    $("sign-in-error").textContent = e.message;
  }
}

function signOut() {
  sessionStorage.removeItem(STORE);
  platformOrg = null;
  $("org-pick").hidden = true;
  keys = [];
  audit = [];
  admin = false;
  keyOwner = null;
  $("keys-body").replaceChildren();
  showSignedIn(false);
  $("sign-in-key").focus();
}

function scopeBoxes(container, chosen) {
  for (const [name, help] of SCOPES) {
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.name = "scope";
    box.value = name;
    box.checked = box.defaultChecked = chosen.includes(name);
    const text = document.createElement("span");
    text.textContent = name + " ";
    const small = document.createElement("span");
    small.className = "scope-help";
    small.textContent = help;
    label.append(box, text, small);
    container.appendChild(label);
  }
}

function checked(container) {
  return [...container.querySelectorAll("input[name=scope]:checked")].map((b) => b.value);
}

function openCreate() {
  $("create-form").reset();
  const fieldset = $("create-scopes");
  fieldset.querySelectorAll("label").forEach((l) => l.remove());
  scopeBoxes(fieldset, ["predict"]);
  const presets = $("create-presets");
  presets.querySelectorAll("label").forEach((l) => l.remove());
  for (const [name, scopes] of Object.entries(settings.presets)) {
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.name = "scope";
    box.value = name;
    const text = document.createElement("span");
    text.textContent = name + " ";
    const small = document.createElement("span");
    small.className = "scope-help";
    small.textContent = "= " + scopes.join(", ");
    label.append(box, text, small);
    presets.appendChild(label);
  }
  $("create-owner-field").hidden = !admin;
  const validity = $("create-validity");
  validity.replaceChildren();
  for (const [value, seconds, text] of VALIDITIES) {
    if (seconds > settings.max_validity_secs) continue;
    const option = document.createElement("option");
    option.value = value;
    option.textContent = text;
    option.selected = value === "30d";
    validity.appendChild(option);
  }
  $("create-error").textContent = "";
  $("create-dialog").showModal();
  $("create-name").focus();
}

async function create(event) {
  event.preventDefault();
  const projects = $("create-projects").value.split(",").map((p) => p.trim()).filter(Boolean);
  const owner = $("create-owner").value.trim() || keyOwner;
  try {
    const created = await call("POST", "/v1/keys", {
      ...(owner ? { user_id: owner } : {}),
      name: $("create-name").value,
      scopes: checked($("create-form")),
      project_ids: projects,
      expires_in: $("create-validity").value,
    });
    $("create-dialog").close();
    showSecret(created.secret);
    await load();
  } catch (e) {
    $("create-error").textContent = e.message;
  }
}

function showSecret(secret) {
  $("secret-value").value = secret;
  $("secret-copied").textContent = "";
  $("secret-dialog").showModal();
  $("secret-value").select();
}

// The secret leaves the page when its dialog closes, however it closes.
function forgetSecret() {
  $("secret-value").value = "";
  $("secret-copied").textContent = "";
}

async function copySecret() {
  try {
    await navigator.clipboard.writeText($("secret-value").value);
    $("secret-copied").textContent = "Copied.";
  } catch {
    $("secret-value").select();
    $("secret-copied").textContent = "Select it and copy it with your keyboard.";
  }
}

// One small form in the edit dialog: `fill` adds its fields, `save` sends it.
function edit(title, fill, save) {
  $("edit-title").textContent = title;
  const fields = $("edit-fields");
  fields.replaceChildren();
  fill(fields);
  $("edit-error").textContent = "";
  const form = $("edit-form");
  form.onsubmit = async (event) => {
    event.preventDefault();
    try {
      await save(fields);
      $("edit-dialog").close();
      await load();
    } catch (e) {
      $("edit-error").textContent = e.message;
    }
  };
  $("edit-dialog").showModal();
  const first = fields.querySelector("input, select");
  if (first) first.focus();
}

function field(container, id, labelText, input) {
  const label = document.createElement("label");
  label.htmlFor = id;
  label.textContent = labelText;
  input.id = id;
  container.append(label, input);
  return input;
}

function rename(key) {
  edit("Rename " + key.name, (f) => {
    const input = document.createElement("input");
    input.value = key.name;
    input.required = true;
    field(f, "edit-name", "Name", input);
  }, (f) => call("PATCH", "/v1/keys/" + key.id, { name: f.querySelector("#edit-name").value }));
}

function editScopes(key) {
  edit("Scopes of " + key.name, (f) => {
    const fieldset = document.createElement("fieldset");
    const legend = document.createElement("legend");
    legend.textContent = "Scopes";
    fieldset.appendChild(legend);
    scopeBoxes(fieldset, key.scopes);
    f.appendChild(fieldset);
  }, (f) => call("PATCH", "/v1/keys/" + key.id, { scopes: checked(f) }));
}

function rotate(key) {
  edit("Rotate " + key.name, (f) => {
    const select = document.createElement("select");
    for (const [value, text] of [["0s", "stops at once"], ["1h", "works 1 more hour"], ["24h", "works 1 more day"], ["7d", "works 7 more days"]]) {
      const option = document.createElement("option");
      option.value = value;
      option.textContent = text;
      select.appendChild(option);
    }
    field(f, "edit-grace", "The current secret", select);
  }, async (f) => {
    const rotated = await call("POST", "/v1/keys/" + key.id + "/rotate", { grace_period: f.querySelector("#edit-grace").value });
    queueMicrotask(() => showSecret(rotated.secret));
  });
}

async function act(key, action) {
  $("keys-error").textContent = "";
  try {
    await call("POST", "/v1/keys/" + key.id + "/" + action);
    await load();
  } catch (e) {
    $("keys-error").textContent = e.message;
  }
}

function remove(key) {
  edit("Delete " + key.name + "?", (f) => {
    const p = document.createElement("p");
    p.className = "warning";
    p.textContent = "Delete the key “" + key.name + "” (" + key.display + ") for good? This cannot be undone.";
    f.appendChild(p);
  }, () => call("DELETE", "/v1/keys/" + key.id));
}

document.addEventListener("DOMContentLoaded", () => {
  $("sign-in-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", signOut);
  $("new-key").addEventListener("click", openCreate);
  $("create-form").addEventListener("submit", create);
  $("secret-copy").addEventListener("click", copySecret);
  $("secret-dialog").addEventListener("close", forgetSecret);
  for (const b of document.querySelectorAll("[data-close]")) {
    b.addEventListener("click", () => b.closest("dialog").close());
  }
  for (const b of document.querySelectorAll("[data-tab]")) {
    b.addEventListener("click", () => {
      if (b.dataset.tab === "keys" && keyOwner) { keyOwner = null; load(); }
      show(b.dataset.tab);
    });
  }
  $("audit-filters").addEventListener("input", renderAudit);
  $("org-select").addEventListener("change", () => {
    keyOwner = null;
    if (platformOrg !== null) {
      platformOrg = $("org-select").value;
      show("keys");
      load();
      return;
    }
    const s = session();
    s.current = Number($("org-select").value);
    sessionStorage.setItem(STORE, JSON.stringify(s));
    enter().catch((e) => { $("keys-error").textContent = e.message; });
  });
  $("add-org").addEventListener("click", () => {
    for (const id of ["keys", "members", "projects", "audit", "legacy"]) $(id).hidden = true;
    $("sign-in").hidden = false;
    $("sign-in-key").focus();
  });
  $("audit-filters").addEventListener("submit", (e) => e.preventDefault());
  if (session().keys.length) {
    enter().catch(signOut);
  } else {
    showSignedIn(false);
  }
});
