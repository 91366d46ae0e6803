// Allure 3 settings of `nox -s report`: one self-contained HTML file (it opens from disk, no server).
export default {
  name: "corral conformance",
  plugins: {
    awesome: {
      options: {
        singleFile: true,
        reportName: "corral conformance",
        groupBy: ["epic", "feature", "story"],
      },
    },
  },
};
