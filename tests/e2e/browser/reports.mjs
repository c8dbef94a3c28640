// Load the dashboard in Debian's Chromium, wait until the received-report
// tables have at least N rows of DMARC sources, and print every cell of
// the three report tables. Used by test_t37_report_intake.py:
//   node reports.mjs URL TOKEN SCREENSHOT MIN_SOURCES
import { chromium } from "playwright-core";

const [url, token, shot, min] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const cells = (id) => [...document.querySelectorAll(`#${id} tr`)].slice(1)
  .map((tr) => [...tr.querySelectorAll("td")].map((td) => td.textContent));
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1400 } });
  await page.goto(`${url}/?refresh=500#token=${token}`);
  await page.waitForSelector("#board:not([hidden])", { timeout: 15000 });
  await page.waitForFunction(
    (min) => document.querySelectorAll("#dmarc-sources tr td:not(.empty)").length > 0 &&
      document.querySelectorAll("#dmarc-sources tr").length - 1 >= min,
    Number(min), { timeout: 15000 },
  );
  const out = {};
  for (const id of ["dmarc-sources", "tls-received", "reports-malformed"]) {
    out[id] = await page.evaluate(`(${cells.toString()})("${id}")`);
  }
  await page.screenshot({ path: shot, fullPage: true });
  console.log(JSON.stringify(out));
} finally {
  await browser.close();
}
