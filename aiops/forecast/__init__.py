"""Load forecasting: baselines, Prophet, an attention LSTM, statistical comparators and ``auto``.

Import the pieces from their modules (``aiops.forecast.base.make_forecaster``,
``aiops.forecast.series.load_series``, ``aiops.forecast.backtest.rolling_origin``). This
package module imports nothing on purpose: ``aiops --help`` loads ``aiops.forecast.cli``,
and that must not pull in numpy, torch or prophet.
"""
