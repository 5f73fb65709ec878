// suivi's pages: live updates. The page reads fully without this script; with it, the server's
// events (server-sent events at the address in <body data-live>) replace the parts of the page
// that changed, by element id, with HTML the server rendered and escaped. Nothing is fetched
// from anywhere but suivi, and no number is formatted here: the server formats every figure.
(function () {
  "use strict";
  var body = document.body;
  var address = body.getAttribute("data-live");
  var status = document.getElementById("live-status");
  if (!address || !window.EventSource) {
    return;
  }
  function say(name) {
    var text = body.getAttribute(name);
    if (status && text && status.textContent !== text) {
      status.textContent = text;
    }
  }
  var source = new EventSource(address);
  source.addEventListener("open", function () {
    say("data-live-on");
  });
  source.addEventListener("error", function () {
    say(source.readyState === EventSource.CLOSED ? "data-live-ended" : "data-live-off");
  });
  source.addEventListener("slots", function (event) {
    var slots = JSON.parse(event.data);
    for (var i = 0; i < slots.length; i++) {
      var element = document.getElementById(slots[i][0]);
      if (element && element.innerHTML !== slots[i][1]) {
        element.innerHTML = slots[i][1];
      }
    }
    body.setAttribute("data-live-updates", String(Number(body.getAttribute("data-live-updates") || 0) + 1));
    say("data-live-on");
  });
  source.addEventListener("ended", function () {
    source.close();
    say("data-live-ended");
  });
})();
