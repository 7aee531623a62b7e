// keygate's API Keys page. It speaks only the management API (/v1, same origin); the key it
// signs in with is kept in sessionStorage, sent as `Authorization: Bearer`, never in a URL or a
// cookie. No framework, no build step; the page's Content-Security-Policy allows this file and
// console.css, and nothing inline.
"use strict";

const STORE = "keygate.console.key";
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

let keys = [];

async function call(method, path, body) {
  const headers = { authorization: "Bearer " + sessionStorage.getItem(STORE) };
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

async function load() {
  $("keys-error").textContent = "";
  try {
    keys = (await call("GET", "/v1/keys?limit=200")).items;
    render();
  } catch (e) {
    $("keys-error").textContent = e.message;
  }
}

function showSignedIn(signedIn) {
  $("sign-in").hidden = signedIn;
  $("keys").hidden = !signedIn;
  $("sign-out").hidden = !signedIn;
  $("who").hidden = !signedIn;
}

async function signIn(event) {
  event.preventDefault();
  const input = $("sign-in-key");
  sessionStorage.setItem(STORE, input.value.trim());
  input.value = "";
  $("sign-in-error").textContent = "";
  try {
    const orgs = await call("GET", "/v1/orgs");
    $("who").textContent = orgs.items.map((o) => o.name).join(", ");
    showSignedIn(true);
    await load();
    $("new-key").focus();
  } catch (e) {
    sessionStorage.removeItem(STORE);
    $("sign-in-error").textContent = e.message;
  }
}

function signOut() {
  sessionStorage.removeItem(STORE);
  keys = [];
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
  $("create-error").textContent = "";
  $("create-dialog").showModal();
  $("create-name").focus();
}

async function create(event) {
  event.preventDefault();
  const projects = $("create-projects").value.split(",").map((p) => p.trim()).filter(Boolean);
  try {
    const created = await call("POST", "/v1/keys", {
      name: $("create-name").value,
      scopes: checked($("create-scopes")),
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
  if (sessionStorage.getItem(STORE)) {
    call("GET", "/v1/orgs").then((orgs) => {
      $("who").textContent = orgs.items.map((o) => o.name).join(", ");
      showSignedIn(true);
      return load();
    }).catch(signOut);
  } else {
    showSignedIn(false);
  }
});
