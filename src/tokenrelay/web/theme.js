// @ts-check
// Applies the saved colour theme before the first paint (a classic, render-blocking
// script on purpose: modules run too late and the page would flash). The toggle lives
// in app.js / demo.js; with no saved choice the page follows prefers-color-scheme.
(function () {
  try {
    var theme = localStorage.getItem('tokenrelay.theme');
    if (theme === 'light' || theme === 'dark') document.documentElement.dataset.theme = theme;
  } catch (e) {
    /* storage disabled: follow the system */
  }
})();
