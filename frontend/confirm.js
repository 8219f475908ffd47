// The confirm dialog of moderation actions (delete, kick, ban): a modal
// <dialog>, so the keyboard stays in it (Tab walks its fields and buttons,
// Escape cancels) and the focus goes back where it was when it closes. The
// texts (a line, a name) go through textContent.

/**
 * Asks one question at a time: `ask({title, text, ok, ban})` resolves to null
 * (cancelled) or `{}` — with `ban`, `{seconds, reason}` from its fields.
 */
export class Confirm {
  constructor(dialog) {
    this.dialog = dialog;
    this.form = dialog.querySelector("form");
    this.title = dialog.querySelector("#confirm-title");
    this.text = dialog.querySelector("#confirm-text");
    this.ban = dialog.querySelector("#confirm-ban");
    this.seconds = dialog.querySelector("#ban-for");
    this.reason = dialog.querySelector("#ban-reason");
    this.ok = dialog.querySelector("#confirm-ok");
    this.answer = null; // resolves the open question
    this.form.addEventListener("submit", (event) => {
      event.preventDefault(); // nothing is submitted anywhere: the answer is the dialog's
      this.close(this.ban.hidden ? {} : { seconds: Number(this.seconds.value), reason: this.reason.value.trim() });
    });
    dialog.querySelector("#confirm-cancel").addEventListener("click", () => this.close(null));
    // Escape (a late event of an earlier question finds the dialog open again: ignored).
    dialog.addEventListener("close", () => { if (!dialog.open) this.close(null); });
  }

  ask({ title, text, ok, ban = false }) {
    this.close(null); // one question at a time
    this.title.textContent = title;
    this.text.textContent = text;
    this.ok.textContent = ok;
    this.ban.hidden = !ban;
    this.reason.value = "";
    this.seconds.value = "3600";
    const asked = new Promise((resolve) => { this.answer = resolve; });
    this.dialog.showModal();
    (ban ? this.seconds : this.ok).focus();
    return asked;
  }

  close(answer) {
    const resolve = this.answer;
    this.answer = null;
    if (this.dialog.open) this.dialog.close();
    resolve?.(answer);
  }
}
