// Attention: lines arriving in a hidden tab count in the title until it is seen.
export class Unread {
  constructor() {
    this.count = 0;
    this.title = document.title;
    document.addEventListener("visibilitychange", () => { if (!document.hidden) this.clear(); });
    window.addEventListener("focus", () => this.clear());
  }

  add() {
    if (!document.hidden) return;
    this.count += 1;
    document.title = `(${this.count}) ${this.title}`;
  }

  clear() {
    this.count = 0;
    document.title = this.title;
  }
}
