// Attention: the title counts the unread lines of every room, "(3) WebSocket chat".
// What counts is decided by the page (rooms not on screen, and the one on
// screen while the tab is hidden); `onSeen` is called when the tab is seen again.
export class Unread {
  constructor(onSeen = () => {}) {
    this.title = document.title;
    document.addEventListener("visibilitychange", () => { if (!document.hidden) onSeen(); });
    window.addEventListener("focus", () => onSeen());
  }

  // total: a number, or "99+".
  show(total) {
    document.title = total && total !== "0" ? `(${total}) ${this.title}` : this.title;
  }
}
