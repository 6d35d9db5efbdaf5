// The live page in Firefox: Debian's firefox-esr driven over WebDriver BiDi by puppeteer-core (no
// browser download, no geckodriver). Run by test_live_page.py while a slow call streams:
//   node firefox_page.mjs LOGIN_LINK LISTEN ARTIFACTS_DIR
// It logs in through the one-time link, sees the call in flight with its tokens growing, cancels it
// from the page and sees it end as cancelled, opens a finished call's record and takes a screenshot.
// Any console error or policy refusal fails it. Exit 0 when every step held.
import { createRequire } from "node:module";
import path from "node:path";

const [link, listen, artifacts] = process.argv.slice(2);
const driverDir = process.env.EXAI_BROWSER_DRIVER_DIR;
const firefox = process.env.EXAI_FIREFOX || "/usr/bin/firefox-esr";
const waitMs = 15_000;
const puppeteer = createRequire(path.join(driverDir, "package.json"))("puppeteer-core");

function check(condition, what) {
  if (!condition) throw new Error(what);
}

// Polls `predicate` in the page until it holds: puppeteer's waitForFunction builds its predicate with
// `new Function`, which the page's Content-Security-Policy (rightly) refuses; evaluate does not.
async function until(page, what, predicate, ...args) {
  const end = Date.now() + waitMs;
  while (!(await page.evaluate(predicate, ...args))) {
    check(Date.now() < end, `timed out after ${waitMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

// The window size comes from Firefox itself: BiDi in Firefox ESR has no screen-orientation override,
// which setViewport needs.
const browser = await puppeteer.launch({
  browser: "firefox",
  executablePath: firefox,
  headless: true,
  defaultViewport: null,
  args: ["--width=1440", "--height=1000"],
});
const problems = [];
try {
  const page = await browser.newPage();
  page.on("console", (message) => {
    if (message.type() === "error" || message.text().includes("Content-Security-Policy")) {
      problems.push(message.text());
    }
  });
  page.on("pageerror", (error) => problems.push(String(error)));

  // Logs in: the code is swapped for an HttpOnly, SameSite=Strict cookie and leaves the address bar.
  await page.goto(link);
  check(page.url() === `http://${listen}/`, `after login the page is at ${page.url()}`);
  const cookies = await browser.cookies();
  const session = cookies.find((cookie) => cookie.name === "exai_page");
  check(session && session.httpOnly && session.sameSite === "Strict", `cookies: ${JSON.stringify(cookies)}`);
  await page.waitForSelector('#connection[data-state="live"]', { timeout: waitMs });

  // The slow call appears in flight and its tokens grow.
  const row = await page.waitForSelector("#in-flight tbody tr", { timeout: waitMs });
  const callId = await row.evaluate((tr) => tr.dataset.callId);
  const tokensNow = () =>
    page.$eval("#in-flight .tokens", (cell) => Number(cell.textContent.replace(/,/g, "")));
  const tokensAbove = (seen) =>
    Number(document.querySelector("#in-flight .tokens")?.textContent.replace(/,/g, "")) > seen;
  await until(page, "the first tokens", tokensAbove, 0);
  await until(page, "more tokens", tokensAbove, await tokensNow());
  const stage = await page.$eval("#in-flight .stage", (cell) => cell.textContent);
  check(stage.includes("stream"), `stage of the call in flight: ${stage}`);
  await page.screenshot({ path: path.join(artifacts, "live-page-firefox.png"), fullPage: true });

  // Cancelled from the page: it leaves the in-flight table and ends as cancelled.
  // Found and clicked in one step in the page: the table is redrawn as progress arrives, and a
  // button found from here just before a redraw is gone by the time it is clicked.
  await page.$eval("#in-flight button.cancel", (button) => button.click());
  await until(page, "no call in flight", () => document.querySelectorAll("#in-flight tbody tr").length === 0);
  await until(
    page,
    "the call listed as cancelled",
    (id) => document.querySelector(`#recent tbody tr[data-call-id="${id}"] .outcome`)?.textContent === "cancelled",
    callId,
  );

  // A finished call's record opens with its fields, answer, arguments and log.
  const finishedId = await page.$$eval(
    "#recent tbody tr",
    (rows) => rows.find((tr) => tr.textContent.includes("succeeded"))?.dataset.callId,
  );
  check(finishedId, "a succeeded call is listed");
  await page.$eval(`#recent tbody tr[data-call-id="${finishedId}"]`, (row) => row.click());
  await page.waitForSelector("#record", { visible: true, timeout: waitMs });
  await until(
    page,
    "the record's fields, answer, arguments and log",
    (id) =>
      document.querySelector("#record-fields")?.textContent.includes(id) &&
      document.querySelector("#record-answer")?.textContent.trim() !== "" &&
      document.querySelector("#record-arguments")?.textContent.includes('"prompt"') &&
      document.querySelector("#record-log")?.textContent.includes("call finished"),
    finishedId,
  );
  await page.screenshot({ path: path.join(artifacts, "live-page-firefox-record.png") });
} finally {
  await browser.close();
}
check(problems.length === 0, `the page met errors or its policy refused something: ${JSON.stringify(problems)}`);
console.log("firefox: logged in, watched, cancelled and opened a record");
