// The server connection: JSON calls and the Server-Sent Events stream, with the bearer
// token the user typed (kept in localStorage). fetch, not EventSource: only fetch can send
// the Authorization header.

const BASE = "/playground/api/models";

export class ApiError extends Error {}

export class Api {
  constructor() {
    this.token = localStorage.getItem("nnserve-token") || "";
  }

  setToken(token) {
    this.token = token;
    localStorage.setItem("nnserve-token", token);
  }

  headers() {
    const headers = {"Content-Type": "application/json"};
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    return headers;
  }

  async call(method, path, body) {
    const response = await fetch(BASE + path, {method, headers: this.headers(),
      body: body === undefined ? undefined : JSON.stringify(body)});
    const payload = await response.json();
    if (!response.ok) throw new ApiError(payload.error || `HTTP ${response.status}`);
    return payload;
  }

  create(settings) { return this.call("POST", "", settings); }
  state(model) { return this.call("GET", `/${encodeURIComponent(model)}`); }
  update(model, settings) { return this.call("POST", `/${encodeURIComponent(model)}/settings`, settings); }
  act(model, action) { return this.call("POST", `/${encodeURIComponent(model)}/${action}`); }

  // Calls onEvent(kind, payload) for every event until `signal` aborts; rejects when the
  // stream ends or fails (the caller reconnects).
  async stream(model, onEvent, signal) {
    const response = await fetch(`${BASE}/${encodeURIComponent(model)}/events`,
                                 {headers: this.headers(), signal});
    if (!response.ok) throw new ApiError((await response.json()).error);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffered = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) throw new ApiError("the event stream ended");
      buffered += value;
      let end;
      while ((end = buffered.indexOf("\n\n")) >= 0) {
        const message = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        const kind = /^event: (.*)$/m.exec(message)?.[1];
        const data = /^data: (.*)$/m.exec(message)?.[1];
        if (kind && data) onEvent(kind, JSON.parse(data));
      }
    }
  }
}
