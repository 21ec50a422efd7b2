// The pairing code arrives in the URL fragment (never sent to a server, never logged).
const token = location.hash.slice(1);
if (token) {
  const input = document.getElementById("token");
  input.value = decodeURIComponent(token);
  history.replaceState(null, "", location.pathname);
  document.getElementById("pair-form").requestSubmit();
}
