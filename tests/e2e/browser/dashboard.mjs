// Load the dashboard in Debian's Chromium, wait for the traffic chart,
// and report what it drew. Used by test_t16_operations.py:
//   node dashboard.mjs URL TOKEN SCREENSHOT [wait-for-total-above]
import { chromium } from "playwright-core";

const [url, token, shot, above] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await page.goto(`${url}/?refresh=500#token=${token}`);
  await page.waitForSelector("#board:not([hidden])", { timeout: 15000 });
  const min = Number(above ?? -1);
  await page.waitForFunction(
    (min) => Number(document.querySelector("#traffic").dataset.total) > min,
    min, { timeout: 15000 },
  );
  const total = await page.$eval("#traffic", (c) => Number(c.dataset.total));
  const pixels = await page.$eval("#traffic", (c) => c.toDataURL().length);
  const pool = await page.$eval("#pool", (e) => e.textContent);
  await page.screenshot({ path: shot, fullPage: true });
  console.log(JSON.stringify({ total, pixels, pool }));
} finally {
  await browser.close();
}
